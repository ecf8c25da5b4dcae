import Foundation
@testable import ImageFS
import Imaging
import TestSupport
import Testing

/// The plumbing of `asr mount` without a mount: options, the pid record, the ready pipe.
struct MountOptionsTests {
    @Test func optionsSplitIntoOursFUSEsAndMountOnly() throws {
        let o = try MountOptions(["ro,allow_other,noverify", "defaults,noauto,nofail,_netdev,user,x-systemd.automount", "comment=x,max_read=65536"],
                                 writable: false)
        #expect(!o.verify)
        #expect(o.fuse == ["allow_other", "max_read=65536"])
        #expect(try MountOptions([], writable: false).verify)
        #expect(try MountOptions([",,"], writable: false).fuse.isEmpty)
    }

    @Test func rwIsRefusedOnlyForAnImage() throws {
        #expect(throws: ImageFSError.self) { try MountOptions(["allow_other,rw"], writable: false) }
        do {
            _ = try MountOptions(["rw"], writable: false)
        } catch {
            guard case .readOnlyOption("rw") = error else { Issue.record("\(error)"); return }
            #expect(error.description == "asr mount of an image is read-only; -o rw is not possible (see --overlay)")
        }
        let writable = try MountOptions(["rw,allow_other"], writable: true)
        #expect(writable.fuse == ["allow_other"])
        #expect(writable.fuseOptions(name: "/b").prefix(1) == ["rw"])
    }

    @Test func theImageNameIsEscapedForLibfuse() throws {
        #expect(MountOptions.escape("/a,b\\c") == "/a\\,b\\\\c")
        #expect(MountOptions.escape("plain") == "plain")
        let o = try MountOptions(["allow_other"], writable: false)
        #expect(o.fuseOptions(name: "/x,y.dmg") == ["ro", "default_permissions", "subtype=asr", "fsname=/x\\,y.dmg", "allow_other"])
    }
}

struct MountRecordTests {
    @Test func pathEscapesTheMountPoint() {
        #expect(MountRecord.escape("/mnt/a-b%") == "-mnt-a%2Db%25")
        // No two mount points share a record.
        let points = ["/a-b", "/a/b", "/a-/b", "/a/-b", "/a--b", "/a%2Db", "/a/%2D"]
        #expect(Set(points.map(MountRecord.escape)).count == points.count)
        #expect(MountRecord.path(for: "/no/such/mount-point", in: "/run/x") == "/run/x/mount-no-such-mount%2Dpoint.pid")
    }

    @Test func aRecordIsResolvedWrittenReadAndRemoved() throws {
        let dir = TemporaryDirectory()
        let point = dir.file("mnt")
        try FileManager.default.createDirectory(atPath: point, withIntermediateDirectories: true)
        let records = dir.file("records")
        // The record names the resolved mount point, so any spelling of it finds the record.
        let path = MountRecord.path(for: point + "/./", in: records)
        #expect(path == MountRecord.path(for: point, in: records))
        #expect(MountRecord.read(path) == nil)
        MountRecord.write(path)
        #expect(MountRecord.read(path) == getpid())
        #expect(MountRecord.running(mountPointContaining: "/mnt", in: records) == [getpid()])
        #expect(MountRecord.running(mountPointContaining: "/other", in: records).isEmpty)
        MountRecord.remove(path)
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test func aStaleRecordNamesNoProcess() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("mount-x.pid")
        // A process that has ended but is not yet reaped (a zombie) counts as ended too.
        let (pid, reply) = try MountDaemon.spawn("/bin/sh", arguments: ["sh", "-c", "exit 0"])
        #expect(ReadyPipe.awaitReply(reply) == .ended)
        let deadline = Date().addingTimeInterval(10)
        while MountRecord.isRunning(pid) && Date() < deadline { usleep(10_000) }
        #expect(!MountRecord.isRunning(pid))
        try "\(pid)\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(MountRecord.read(path) == nil)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        #expect(MountRecord.read(path) == nil)
        // Another process's record is not ours to remove.
        MountRecord.remove(path)
        #expect(FileManager.default.fileExists(atPath: path))
    }
}

struct ReadyPipeTests {
    func pipePair() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        try #require(pipe(&fds) == 0)
        return (fds[0], fds[1])
    }

    @Test func readyFailedAndSilence() throws {
        var p = try pipePair()
        ReadyPipe.sendReady(p.write)
        #expect(ReadyPipe.awaitReply(p.read) == .ready)
        p = try pipePair()
        ReadyPipe.sendFailure("cannot mount on /x: no", to: p.write)
        #expect(ReadyPipe.awaitReply(p.read) == .failed("cannot mount on /x: no"))
        p = try pipePair()
        close(p.write)
        #expect(ReadyPipe.awaitReply(p.read) == .ended)
    }

    /// The spawned process has the write end as descriptor 3, in a session of its own.
    @Test func aSpawnedProcessAnswersOnDescriptor3() throws {
        let cases: [(String, ReadyPipe.Reply)] = [
            ("test \"$(cut -d' ' -f6 /proc/self/stat)\" = $$ && echo ready >&3", .ready),
            ("echo 'asr: it broke' >&3; exit 1", .failed("asr: it broke")),
            ("exec 3>&-; sleep 0.1", .ended),
        ]
        for (script, expected) in cases {
            let (pid, reply) = try MountDaemon.spawn("/bin/sh", arguments: ["sh", "-c", script])
            #expect(ReadyPipe.awaitReply(reply) == expected, "\(script)")
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
    }

    @Test func theChildIsToldToStayInTheForeground() {
        #expect(MountDaemon.childArguments(["asr", "mount", "-o", "ro", "--", "a", "b"])
            == ["asr", "mount", "--foreground", "--ready-fd", "3", "-o", "ro", "--", "a", "b"])
    }

}

struct UnmounterTests {
    @Test func fusermountsNameIsDroppedFromItsReason() {
        #expect(Unmounter.reason(fusermountSaid: "fusermount3: entry for /x not found in /etc/mtab\nmore\n")
            == "entry for /x not found in /etc/mtab")
        #expect(Unmounter.reason(fusermountSaid: "odd\n") == "odd")
        #expect(Unmounter.reason(fusermountSaid: "") == nil)
        #expect(ImageFSError.unmount(point: "/m", reason: nil).description == "cannot unmount /m: fusermount3 failed")
    }

}

/// Where a mount's disk.img has its block map, and how Imaging finds it.
struct MountedDiskTests {
    @Test func aMountsDiskFindsItsBlockMap() throws {
        let dir = TemporaryDirectory()
        #expect(MountedDisk.blockMap(for: dir.file("disk.img")) == nil)
        try Data().write(to: URL(fileURLWithPath: dir.file("written.bmap")))
        #expect(MountedDisk.blockMap(for: dir.file("disk.img")) == dir.file("written.bmap"))
        try Data().write(to: URL(fileURLWithPath: dir.file("blockmap.bmap")))
        #expect(MountedDisk.blockMap(for: dir.file("disk.img")) == dir.file("blockmap.bmap"))
        #expect(MountedDisk.blockMap(for: dir.file("other.img")) == nil)
    }

    /// Imaging knows no mount's file names: the lookup the program installs finds them.
    @Test func imagingAsksTheLookupForAMountsBlockMap() throws {
        BlockMap.setServedSidecarLookup(MountedDisk.blockMap)
        let dir = TemporaryDirectory()
        let disk = dir.file("disk.img")
        #expect(BlockMap.sidecar(for: disk) == nil)
        try Data().write(to: URL(fileURLWithPath: dir.file("blockmap.bmap")))
        #expect(BlockMap.sidecar(for: disk) == dir.file("blockmap.bmap"))
        #expect(BlockMap.servedSidecar(for: disk) == dir.file("blockmap.bmap"))
        // An image's own .bmap comes first; only the served one counts as kept current.
        try Data().write(to: URL(fileURLWithPath: disk + ".bmap"))
        #expect(BlockMap.sidecar(for: disk) == disk + ".bmap")
        #expect(BlockMap.servedSidecar(for: dir.file("other.img")) == nil)
    }
}
