import SystemSupport
import Foundation
import TestSupport
import Testing

/// Real filesystems made by their own tools, with files written, a large random file deleted
/// and more files written: `asr create` leaves the deleted file's blocks out, and every
/// restore (file, device over 0xFF, HTTP, multicast) passes the filesystem's own checker and
/// holds exactly the source's files.
@Suite(.serialized) struct FilesystemImagingTests {
    enum Kind: String, CaseIterable, Sendable {
        case ext4, fat32, ntfs

        /// The name `asr create` prints for it.
        var name: String { switch self { case .ext4: "ext4"; case .fat32: "FAT32"; case .ntfs: "NTFS" } }
    }

    static var enabled: Bool {
        Privileged.required || (getuid() == 0 && FileManager.default.fileExists(atPath: "/dev/loop-control"))
    }

    /// Bytes of the random file written and then deleted.
    static let deleted: UInt64 = 64 << 20
    static let partitionOffset: UInt64 = 1 << 20
    static let partitionBytes: UInt64 = 128 << 20

    /// A 160 MiB GPT disk (sfdisk) whose one partition holds `kind`, and the SHA-256 listing
    /// of its files.
    struct Disk {
        let dir = TemporaryDirectory()
        let kind: Kind
        let raw: String
        let manifest: String

        init(_ kind: Kind) throws {
            self.kind = kind
            raw = dir.file("disk.raw")
            try Run.shell("""
                truncate -s 160M '\(raw)'
                printf 'label: gpt\\nstart=2048, size=262144, type=\(kind == .ext4 ? "L" : "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"), name="data"\\n' | sfdisk -q '\(raw)'
                """)
            let loop = try FilesystemImagingTests.attach(raw)
            defer { FilesystemImagingTests.detach(loop) }
            let files = dir.file("files")
            try Run.shell("""
                mkdir -p '\(files)/docs' '\(files)/more'
                seq 1 200000 > '\(files)/docs/numbers.txt'
                head -c 3M /dev/urandom > '\(files)/docs/noise.bin'
                for i in $(seq 1 40); do seq $i 7 90000 > '\(files)/docs/list-'$i'.txt'; done
                head -c \(FilesystemImagingTests.deleted) /dev/urandom > '\(dir.file("big.bin"))'
                seq 1 300000 > '\(files)/more/later.txt'
                head -c 2M /dev/urandom > '\(files)/more/later.bin'
                """)
            let mnt = dir.file("mnt")
            try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
            switch kind {
            case .ext4:
                try Run.withPrivateMounts("""
                    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 \(loop)
                    mount \(loop) '\(mnt)'
                    cp -r '\(files)/docs' '\(mnt)/'
                    cp '\(dir.file("big.bin"))' '\(mnt)/big.bin'; sync
                    rm '\(mnt)/big.bin'; sync
                    cp -r '\(files)/more' '\(mnt)/'; sync
                    umount '\(mnt)'
                    """)
            case .fat32:
                try Run.shell("""
                    mkfs.fat -F 32 \(loop) >/dev/null
                    export MTOOLS_SKIP_CHECK=1
                    mcopy -s -i \(loop) '\(files)/docs' ::/
                    mcopy -i \(loop) '\(dir.file("big.bin"))' ::/big.bin
                    mdel -i \(loop) ::/big.bin
                    mcopy -s -i \(loop) '\(files)/more' ::/
                    """)
            case .ntfs:
                try Run.withPrivateMounts("""
                    mkntfs -Q -F -q \(loop)
                    ntfs-3g \(loop) '\(mnt)'
                    cp -r '\(files)/docs' '\(mnt)/'
                    cp '\(dir.file("big.bin"))' '\(mnt)/big.bin'; sync
                    rm '\(mnt)/big.bin'; sync
                    cp -r '\(files)/more' '\(mnt)/'; sync
                    umount '\(mnt)'
                    """)
            }
            unlink(dir.file("big.bin"))
            manifest = try Run.shell("cd '\(files)' && find . -type f -print0 | sort -z | xargs -0 sha256sum")
        }

        /// The checker's verdict on the partition of a restored disk, and its files' listing.
        func check(_ restored: String) throws {
            let loop = try FilesystemImagingTests.attach(restored, readOnly: true)
            defer { FilesystemImagingTests.detach(loop) }
            let fsck: CLI.Output
            switch kind {
            case .ext4: fsck = try Run.process("/usr/sbin/e2fsck", ["-fn", loop])
            case .fat32: fsck = try Run.process("/usr/sbin/fsck.fat", ["-n", loop])
            case .ntfs: fsck = try Run.process("/usr/bin/ntfsfix", ["-n", loop])
            }
            #expect(fsck.status == 0, "\(kind) checker on \(restored): \(fsck.stdout) \(fsck.stderr)")
            let out = dir.file("out-\(UUID().uuidString)")
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: out) }
            switch kind {
            case .ext4, .ntfs:
                let mnt = out + "/mnt"
                try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
                try Run.shell(kind == .ext4 ? "mount -o ro,noload \(loop) '\(mnt)'" : "ntfs-3g -o ro \(loop) '\(mnt)'")
                defer { _ = try? Run.shell("umount '\(mnt)'") }
                let listing = try Run.shell("cd '\(mnt)' && find . -type f -not -path './lost+found/*' -print0 | sort -z | xargs -0 sha256sum")
                #expect(listing == manifest, "\(kind): the restored files differ")
            case .fat32:
                try Run.shell("MTOOLS_SKIP_CHECK=1 mcopy -s -i \(loop) '::/*' '\(out)/'")
                let listing = try Run.shell("cd '\(out)' && find . -type f -print0 | sort -z | xargs -0 sha256sum")
                #expect(listing == manifest, "\(kind): the restored files differ")
            }
        }
    }

    /// A loop device over the partition of `disk` (no udev here for partition nodes).
    static func attach(_ disk: String, readOnly: Bool = false) throws -> String {
        try Run.shell("losetup \(readOnly ? "-r " : "")-f --show -o \(partitionOffset) --sizelimit \(partitionBytes) '\(disk)'")
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func detach(_ loop: String) { _ = try? Run.shell("losetup -d \(loop)") }

    static func filled(_ path: String, like disk: String) throws {
        try Run.shell("head -c $(stat -c %s '\(disk)') /dev/zero | tr '\\0' '\\377' > '\(path)'")
    }

    @Test(.enabled(if: enabled, "needs root, loop devices and mounts"), arguments: Kind.allCases)
    func freeSpaceIsLeftOutAndRestoresPassTheirChecker(_ kind: Kind) throws {
        let disk = try Disk(kind)
        let image = disk.dir.file("disk.dmg")
        let created = try CLI.run(["create", "--source", disk.raw, "--output", image])
        #expect(created.status == 0, "\(created.stderr)")
        #expect(created.stdout.contains("\tpartition 1 (\(kind.name)): ") && created.stdout.contains(" in use, found from "),
                "\(created.stdout)")
        // The deleted file's noise would not compress: an image holding it is larger than it.
        #expect(fileSize(image) < 24 << 20, "\(kind) image is \(fileSize(image)) bytes")
        let whole = disk.dir.file("whole.dmg")
        #expect(try CLI.run(["create", "--source", disk.raw, "--output", whole, "--all-blocks"]).status == 0)
        #expect(fileSize(whole) > Self.deleted, "--all-blocks keeps the deleted file's blocks")
        let info = try CLI.run(["info", "--source", image])
        #expect(info.stdout.contains("\tpartition 1 (\(kind.name)): ") && info.stdout.contains(" in use (found from "), "\(info.stdout)")

        for img in [image, whole] { #expect(try CLI.run(["imagescan", "--source", img]).status == 0) }
        // Onto a new file, and onto a file of 0xFF: free space keeps whatever it held.
        let fresh = disk.dir.file("fresh.raw"), dirty = disk.dir.file("dirty.raw")
        try Self.filled(dirty, like: disk.raw)
        for target in [fresh, dirty] {
            let out = try CLI.run(["restore", "--source", image, "--target", target, "--erase", "--noprompt"])
            #expect(out.status == 0, "\(out.stderr)")
            try disk.check(target)
        }
        // --all-blocks: the disk byte for byte; --erase-free: what the image decodes to.
        let identical = disk.dir.file("identical.raw")
        #expect(try CLI.run(["restore", "--source", whole, "--target", identical, "--erase", "--noprompt"]).status == 0)
        #expect(try sha256(file: identical) == sha256(file: disk.raw),
                "\((try? Run.process("/usr/bin/cmp", [identical, disk.raw]).stdout) ?? "")")
        let erased = disk.dir.file("erased.raw"), decoded = disk.dir.file("decoded.raw")
        try Self.filled(erased, like: disk.raw)
        #expect(try CLI.run(["restore", "--source", image, "--target", erased, "--erase", "--noprompt", "--erase-free"]).status == 0)
        #expect(try CLI.run(["convert", "--source", image, "--format", "RAW", "--output", decoded]).status == 0)
        #expect(try sha256(file: erased) == sha256(file: decoded))
        try disk.check(erased)
    }

    @Test(.enabled(if: enabled, "needs root, loop devices and mounts"))
    func httpRestoreFetchesNoFreeSpace() throws {
        let disk = try Disk(.ext4)
        let www = disk.dir.file("www")
        try FileManager.default.createDirectory(atPath: www, withIntermediateDirectories: true)
        #expect(try CLI.run(["create", "--source", disk.raw, "--output", www + "/disk.dmg"]).status == 0)
        #expect(try CLI.run(["imagescan", "--source", www + "/disk.dmg"]).status == 0)
        let nginx = try Nginx(serving: www)
        let target = disk.dir.file("h.raw")
        let out = try CLI.run(["restore", "--source", nginx.url("disk.dmg"), "--target", target, "--erase", "--noprompt"])
        #expect(out.status == 0, "\(out.stderr)")
        try disk.check(target)
        let sent = nginx.bytesSent(for: "/disk.dmg")
        #expect(sent <= fileSize(www + "/disk.dmg") + 4096 && sent < Self.deleted / 2, "nginx sent \(sent) bytes")
    }

    @Test(.enabled(if: enabled && Lab.enabled, "needs root, loop devices and network namespaces"))
    func multicastSkipsFreeSpace() throws {
        let disk = try Disk(.ext4)
        let image = disk.dir.file("disk.dmg")
        #expect(try CLI.run(["create", "--source", disk.raw, "--output", image]).status == 0)
        #expect(try CLI.run(["imagescan", "--source", image]).status == 0)
        let config = disk.dir.file("cfg.plist")
        Lab.writeConfig(config, rate: 40_000_000, group: "239.77.0.4", extra: "<key>DNS Service Discovery</key><false/>")
        let bed = try Testbed(hosts: ["server", "c1"])
        defer { bed.teardown() }
        let lab = Lab()
        let server = try bed.start("server", [CLI.binary, "server", "--source", image, "--config", config], log: disk.dir.file("server.log"))
        usleep(300_000)
        let target = disk.dir.file("m.raw")
        try Self.filled(target, like: disk.raw)
        let client = try bed.start("c1", [CLI.binary, "restore", "--source", "asr://\(bed.address("server"))", "--target", target,
                                          "--erase", "--noprompt", "--timeout", "30"], log: disk.dir.file("c1.log"))
        #expect(lab.wait(client), "\(lab.log(disk.dir.file("c1.log")))")
        try disk.check(target)
        server.terminate()
        #expect(lab.wait(server, seconds: 10))
        let text = lab.log(disk.dir.file("server.log"))
        let skipped = text.split(separator: "\n").compactMap { line -> UInt64? in
            guard let r = line.range(of: "skipping ") else { return nil }
            return UInt64(line[r.upperBound...].prefix { $0.isNumber })
        }.first
        #expect((skipped ?? 0) > Self.deleted / 2, "the server skips the deleted file's blocks: \(text)")
        let sent = try #require(Lab.ServerLog(text).stopped)
        #expect(sent < Self.deleted / 2, "sent \(sent) bytes: \(text)")
    }
}
