import ArgumentParser
import Foundation
import ImageFS
import Imaging

struct Mount: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show an image as files through FUSE, or a writable disk: target or copy-on-write overlay.",
        discussion: """
            asr mount IMAGE MOUNTPOINT: IMAGE is a UDIF image, a raw image (its .bmap is used when \
            present) or a block device. The mount holds disk.img, partitions/<n>-<name>.img, \
            blockmap.bmap, blockmap.json, checksums.sha256, info.plist and volumes/<n>-<name>/: \
            the files of each ext2/3/4, HFS+ and FAT filesystem, all read-only. A UDIF \
            image's chunks are checked against its CRC-32s (and its imagescan SHA-256s) before \
            mounting, unless -o noverify.

            asr mount --target BACKING [--size SIZE] MOUNTPOINT: a writable disk.img of SIZE bytes \
            kept in the sparse file BACKING, with live written.bmap and status.json beside it. \
            asr mount --overlay IMAGE --cow CHANGES MOUNTPOINT: the image's disk made writable, \
            writes kept in the sparse file CHANGES; the image is never written. --save-as packs \
            the writable disk into a scanned UDZO image when it is unmounted.

            Runs in the background once mounted, unless -f. SIGINT, SIGTERM and asr unmount \
            unmount. Options for mount(8) only (defaults, noauto, user, nofail, _netdev, x-*) are \
            ignored, so /etc/fstab lines work through mount.asr.
            """)

    @Argument(help: ArgumentHelp("IMAGE MOUNTPOINT, or only MOUNTPOINT with --target or --overlay.", valueName: "paths"))
    var paths: [String]
    @Option(name: .short, help: ArgumentHelp("Mount options, comma-separated (allow_other, noverify, ...).", valueName: "options"))
    var options: [String] = []
    @Flag(name: [.short, .customLong("foreground")], help: "Stay in the foreground.") var foreground = false
    @Option(help: ArgumentHelp("A writable disk kept in this sparse file.", valueName: "backing")) var target: String?
    @Option(help: "The size of the --target disk (bytes, or K, M, G, T); an existing backing file has its own.") var size: String?
    @Option(help: ArgumentHelp("Make this image writable; writes go to --cow.", valueName: "image")) var overlay: String?
    @Option(help: ArgumentHelp("The copy-on-write file of --overlay.", valueName: "changes")) var cow: String?
    @Option(help: ArgumentHelp("On unmount, pack the writable disk into this scanned UDZO image.", valueName: "image.dmg"))
    var saveAs: String?
    @Option(help: .hidden) var readyFD: Int32?
    @OptionGroup var trust: TrustOptions

    func validate() throws {
        let writable = target != nil || overlay != nil
        if target != nil && overlay != nil { throw ValidationError("give --target or --overlay, not both") }
        if paths.count != (writable ? 1 : 2) {
            throw ValidationError(writable ? "give only the mount point with --target or --overlay" : "give IMAGE and MOUNTPOINT")
        }
        if (overlay == nil) != (cow == nil) { throw ValidationError("--overlay and --cow go together") }
        if size != nil && target == nil { throw ValidationError("--size goes with --target") }
        if saveAs != nil && !writable { throw ValidationError("--save-as goes with --target or --overlay") }
    }

    func run() throws {
        var parsed = try MountOptions(options, writable: target != nil || overlay != nil)
        let trusted = try trust.keys(), pin = try trust.pin()
        if !trusted.isEmpty || pin != nil, let image = overlay ?? (target == nil ? paths[0] : nil) {
            // Before anything is shown; and every chunk is then checked against the signed scan.
            try trusted.check(ImageSource.open(absolute(image)), pin: pin)
            parsed.verify = true
        }
        if !foreground { try MountDaemon.startInBackground() }
        let mountPoint = paths.last!
        var mounted = false
        do {
            if target == nil && overlay == nil {
                // The mount outlives the working directory it was started from: name the image fully.
                let name = absolute(paths[0])
                let log: @Sendable (String) -> Void = if let readyFD { MountDaemon.logger(readyFD: readyFD) } else { ImageView.standardErrorLog }
                let view = try ImageView(path: name, verify: parsed.verify, log: log)
                try mountAndServe(view, name: name, at: mountPoint, parsed) { mounted = true }
                return
            }
            let disk = if let target {
                try WritableDisk.target(backing: absolute(target), size: try size.map(ByteSize.parse))
            } else {
                try WritableDisk.overlay(image: absolute(overlay!), changes: absolute(cow!))
            }
            try mountAndServe(disk, name: absolute(target ?? overlay!), at: mountPoint, parsed) { mounted = true }
            if let saveAs { try disk.save(as: absolute(saveAs)) }
        } catch {
            if !mounted { MountDaemon.failed(readyFD, error) }
            // In the background standard error is gone; a failed --save-as still gets told.
            if readyFD != nil { MountDaemon.log("asr mount: \(error)") }
            throw error
        }
    }

    private func absolute(_ path: String) -> String {
        path.contains("://") ? path : URL(fileURLWithPath: path).standardizedFileURL.path
    }

    /// Mounts `fileSystem`, says ready, serves until unmounted; the pid file lets
    /// `asr unmount` wait for this process to finish (a --save-as, say).
    private func mountAndServe(_ fileSystem: any FileSystem, name: String, at mountPoint: String, _ parsed: MountOptions,
                               onMounted: () -> Void) throws {
        let owner = name.contains("://") ? FuseMount.Owner() : FuseMount.Owner(of: name)
        let mount = try FuseMount(fileSystem: fileSystem, mountPoint: mountPoint, options: parsed.fuseOptions(name: name), owner: owner)
        let pidFile = MountRecord.path(for: mountPoint)
        try mount.run {
            MountRecord.write(pidFile)
            onMounted()
            MountDaemon.ready(readyFD)
        }
        MountRecord.remove(pidFile)
    }
}

struct Unmount: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Unmount what asr mount mounted, and wait for its process to finish.",
        discussion: "Waits for a --save-as image to be written before returning.")

    @Argument(help: "The mount point.") var mountPoint: String
    @Flag(name: [.short, .customLong("lazy")], help: "Detach now, release when no longer busy.") var lazy = false

    func run() throws {
        try Unmounter.unmount(mountPoint, lazy: lazy) { pid in
            FileHandle.standardError.write(Data("asr: waiting for the mount process \(pid) to finish (a --save-as, or another mount namespace still holding \(mountPoint))\n".utf8))
        }
    }
}
