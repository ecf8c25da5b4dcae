import Filesystems
import Foundation
import Testing
import TestSupport

/// NTFS made by mkntfs, files written with ntfscp and one deleted through an ntfs-3g mount;
/// checked against ntfscluster's free space, where the files' bytes are, and by wiping
/// everything the map leaves out, then ntfsfix and ntfscat.
@Suite(.serialized) struct NTFSTests {
    struct Made {
        let dir = TemporaryDirectory()
        let files = SampleFiles()
        var image: String { dir.file("ntfs.img") }
    }

    static func make() throws -> Made {
        let made = Made()
        try emptyFile(made.image, size: 64 << 20)
        try Tool.run(["mkntfs", "-F", "-f", "-Q", "-q", made.image])
        for (name, bytes) in [("keep.bin", made.files.keep), ("big.bin", made.files.big), ("notes.txt", made.files.notes)] {
            try write(bytes, to: made.dir.file(name))
            try Tool.run(["ntfscp", "-q", made.image, made.dir.file(name), name])
        }
        try delete("big.bin", from: made)
        return made
    }

    /// ntfsprogs cannot delete: an ntfs-3g mount in the foreground does, and its exit after
    /// the unmount means the volume is written back and closed.
    static func delete(_ name: String, from made: Made) throws {
        let mountPoint = made.dir.file("mnt")
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        guard Tool.exists("ntfs-3g") else { throw TestFailure("ntfs-3g is not installed (make deps installs it)") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["ntfs-3g", "-o", "no_detach", made.image, mountPoint]
        p.environment = ["PATH": Tool.path]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer {
            if p.isRunning { _ = try? Tool.output(["fusermount3", "-u", mountPoint]) }
            p.waitUntilExit()
        }
        let file = mountPoint + "/" + name
        let deadline = Date().addingTimeInterval(20)
        while !FileManager.default.fileExists(atPath: file) {
            guard p.isRunning, Date() < deadline else { throw TestFailure("the ntfs-3g mount did not show \(name)") }
            Thread.sleep(forTimeInterval: 0.05)
        }
        try FileManager.default.removeItem(atPath: file)
        try Tool.run(["fusermount3", "-u", mountPoint])
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw TestFailure("ntfs-3g exited \(p.terminationStatus)") }
    }

    /// ntfscluster -i's "bytes of free space".
    static func freeBytes(_ image: String) throws -> UInt64 {
        let text = try Tool.run(["ntfscluster", "-f", "-i", image])
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("bytes of free space") }),
              let value = line.split(separator: ":").last.flatMap({ UInt64($0.trimmingCharacters(in: .whitespaces)) }) else {
            throw TestFailure("ntfscluster said: \(text)")
        }
        return value
    }

    @Test func mapIsTheClusterBitmap() throws {
        let made = try Self.make()
        let image = try contents(made.image)
        let map = try mapped(image)
        #expect(map.filesystem == "NTFS")
        #expect(map.method == "$Bitmap (libntfs-3g)")
        // Free is exactly the clear bits of $Bitmap; the boot sector and the backup boot
        // sector (the partition's last sector, outside the clusters) are kept.
        #expect(try Self.freeBytes(made.image) == map.length - map.allocatedBytes)
        #expect(map.covers(0..<512))
        #expect(map.covers(map.length - 512..<map.length))
        for range in try locate(made.files.keep, in: image) {
            #expect(map.covers(range), "the kept file's bytes at \(range) are not in the map")
        }
        let deleted = try locate(made.files.big, in: image)
        #expect(!deleted.contains { map.touches($0) }, "the deleted file's bytes are in the map")
    }

    @Test func filesystemSurvivesWipingWhatIsFree() throws {
        let made = try Self.make()
        var image = try contents(made.image)
        let map = try mapped(image)
        #expect(wipeUnallocated(&image, map) >= 1 << 20)
        let wiped = made.dir.file("wiped.img")
        try write(image, to: wiped)
        try Tool.run(["ntfsfix", "-n", wiped])
        #expect(try Self.freeBytes(wiped) == Self.freeBytes(made.image))
        for (name, want) in [("keep.bin", made.files.keep), ("notes.txt", made.files.notes)] {
            let out = made.dir.file("out.bin")
            let text = try Tool.run(["sh", "-c", "ntfscat \"$0\" \"$1\" > \"$2\"", wiped, name, out])
            #expect(try contents(out) == want, "\(name) reads back changed: \(text)")
        }
        // And the wiped volume maps the same.
        #expect(try mapped(image) == map)
    }

    /// A hibernated Windows resumes from memory and may allocate clusters $Bitmap does not
    /// show: hiberfil.sys starting "hibr" makes the volume unreadable.
    @Test func hibernatedVolumeIsUnreadable() throws {
        let made = try Self.make()
        let hiberfile = made.dir.file("hiberfil.sys")
        try write(Array("hibr".utf8) + randomBytes(8188, seed: 21), to: hiberfile)
        try Tool.run(["ntfscp", "-q", made.image, hiberfile, "hiberfil.sys"])
        guard case .unreadable("NTFS", let reason) = examine(try contents(made.image)) else { Issue.record("not unreadable"); return }
        #expect(reason.contains("hibernated"))
    }

    @Test func damagedVolumesAreUnreadable() throws {
        let made = try Self.make()
        let image = try contents(made.image)
        func reason(_ bytes: [UInt8], length: Int? = nil) -> String? {
            let finding = FilesystemUsage.examine(MemorySource(bytes: bytes), offset: 0, length: UInt64(length ?? bytes.count))
            guard case .unreadable("NTFS", let reason) = finding else { return nil }
            return reason
        }
        #expect(reason(image, length: image.count - (1 << 20)) != nil)
        // $MFT's record 6 ($Bitmap) without its FILE magic: libntfs-3g refuses, in its words.
        let clusterSize = Int(image[13]) * 512
        let mft = Int(image[48]) | Int(image[49]) << 8 | Int(image[50]) << 16
        var badBitmapRecord = image
        for k in 0..<4 { badBitmapRecord[mft * clusterSize + 6 * 1024 + k] = 0 }
        let why = reason(badBitmapRecord)
        #expect(why?.isEmpty == false, "\(String(describing: why))")
        // $MFT placed past the volume: refused before libntfs-3g sees it.
        var badMFT = image
        badMFT[55] = 0x7F
        #expect(reason(badMFT)?.contains("$MFT") == true)
    }
}
