// asr: the command-line front end. It parses arguments, calls Imaging and UDIF, prints their
// results and maps every failure to one line on standard error and exit status 1.

import SystemSupport
import ArgumentParser
import CommandSupport
import Foundation
import ImageFS
import Imaging
import Multicast
import UDIF

@main
struct Asr: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "asr",
        abstract: "Create, inspect and restore disk images (Apple UDIF .dmg and raw).",
        version: asrVersion,
        subcommands: [Create.self, ImageScan.self, Verify.self, Restore.self, Compare.self, Server.self, List.self, Info.self, Convert.self, Mount.self, Unmount.self, Version.self])

    static func main() {
        // A parent may start us with these blocked (spawned children inherit the mask).
        var stopSignals = sigset_t()
        sigemptyset(&stopSignals)
        sigaddset(&stopSignals, SIGINT)
        sigaddset(&stopSignals, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &stopSignals, nil)
        signal(SIGINT) { _ in Interruption.request() }
        signal(SIGTERM) { _ in Interruption.request() }
        // A mount's disk.img has its block map in the mount: imagescan, verify, restore, server find it.
        BlockMap.setServedSidecarLookup(MountedDisk.blockMap)
        do {
            var command = try parseAsRoot(LegacySyntax.modernize(Array(CommandLine.arguments.dropFirst())))
            try command.run()
        } catch let error as any UserFacingError {
            fail(error.description)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Foundation.exit(0)
            }
            let message = fullMessage(for: error)
            FileHandle.standardError.write(Data((message.hasSuffix("\n") ? message : message + "\n").utf8))
            Foundation.exit(1)
        }
    }

    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("asr: \(message)\n".utf8))
        Foundation.exit(1)
    }
}

let asrVersion = "0.2.0"

/// What the command line itself refuses.
enum CommandLineError: UserFacingError {
    case eraseNotConfirmed(target: String)
    case noTerminalToConfirm(target: String)

    var description: String {
        switch self {
        case .eraseNotConfirmed(let target): "restore erases \(target); pass --erase to confirm"
        case .noTerminalToConfirm(let target): "no terminal to confirm erasing \(target); pass --noprompt to erase without asking"
        }
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the version.")
    func run() { print("asr \(asrVersion)") }
}

/// Output options shared by the Apple-style commands.
struct OutputOptions: ParsableArguments {
    @Flag(help: "Machine-readable progress: TAB-separated PINF/PSTT/PPRG/PSTP lines (see asr(1)).")
    var puppetstrings = false

    var reporter: Reporter { Reporter(puppetstrings ? .puppet : .human(bars: true)) }
}

extension FolderFilesystem: ExpressibleByArgument {}

struct Create: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a UDIF image from a device, raw image, mounted filesystem or folder tree.",
        discussion: """
            With --source, SRC is a raw image file, a block device, or the mount point of a \
            filesystem (its block device is imaged; a read-write mount is refused unless --force). \
            With --srcfolder, a new ext4 or FAT32 filesystem is built from the folder tree by \
            mke2fs or mkfs.vfat and mcopy, then packed. Sizes take K, M, G or T suffixes.
            Each partition's filesystem is examined (ext2/3/4, FAT, NTFS, ...) and its free space \
            is left out of the image as UDIF ignore runs, never read or stored; a line per \
            partition says how much is in use, or why it was imaged whole. --all-blocks images \
            every block instead.
            """)

    @Option(help: "Raw image, block device or mount point to image.") var source: String?
    @Option(help: "Folder tree to build a filesystem image from.") var srcfolder: String?
    @Option(help: "The image to write.") var output: String
    @Option(help: "UDZO (zlib), UDBZ (bzip2), ULMO (XZ, densest) or UDRO (uncompressed).") var format = "UDZO"
    @Option(help: "Bytes per chunk, a multiple of 512 from 64K to 64M (hdiutil writes 1M); larger is denser, smaller re-images faster with --incremental.")
    var chunkSize = "1M"
    @Option(help: "UDZO: zlib level, 1 (fastest) to 12 (densest; hdiutil's zlib-level goes to 9).") var zlibLevel = "6"
    @Option(help: "Filesystem for --srcfolder: ext4 or fat32.") var fs: FolderFilesystem = .ext4
    @Option(help: "Volume label for --srcfolder.") var volname: String?
    @Option(help: "Filesystem size for --srcfolder: auto or a size like 512M.") var size: String = "auto"
    @Flag(help: "Image a read-write mounted source anyway.") var force = false
    @Flag(help: "Image every block, free space included (do not examine filesystems).") var allBlocks = false
    @Flag(help: "Replace OUTPUT if it exists.") var overwrite = false

    func validate() throws {
        guard (source == nil) != (srcfolder == nil) else {
            throw ValidationError("give exactly one of --source and --srcfolder")
        }
    }

    func run() throws {
        var creator = ImageCreator()
        creator.format = try ImageFormat(parsing: format)
        creator.chunkSize = try ImageCreator.parseChunkSize(chunkSize)
        creator.zlibLevel = try ImageCreator.parseZlibLevel(zlibLevel)
        creator.force = force
        creator.allBlocks = allBlocks
        creator.overwrite = overwrite
        creator.reporter = .terminalOnly
        if let source {
            _ = try creator.create(source: source, output: output)
        } else if let srcfolder {
            let bytes = size.lowercased() == "auto" ? nil : try ByteSize.parse(size)
            _ = try creator.create(folder: srcfolder, output: output, filesystem: fs, volumeName: volname, size: bytes)
        }
        print("asr: created image \"\(output)\"")
    }
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe an image: format, codecs, size, regions, checksums, scan state.",
        discussion: "Exits 1 when a stored checksum does not match the data.")

    @Option(help: "UDIF image, raw image or block device.") var source: String
    @Flag(help: "Print an XML property list.") var plist = false
    @Flag(help: "Print JSON.") var json = false
    @Flag(help: "Skip decoding every chunk to check the CRC-32s.") var quick = false

    func validate() throws {
        if plist && json { throw ValidationError("give at most one of --plist and --json") }
    }

    func run() throws {
        let info = try ImageInfo.inspect(source, verify: !quick)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(terminalSafeJSON(String(decoding: try encoder.encode(info), as: UTF8.self)))
        } else if plist {
            let encoder = PropertyListEncoder()
            encoder.outputFormat = .xml
            print(String(decoding: try encoder.encode(info), as: UTF8.self), terminator: "")
        } else {
            print(info.text(), terminator: "")
        }
        if !info.checksumsOK { Asr.fail("\(source): stored checksums do not match the data") }
    }
}

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert an image to UDZO, UDBZ, ULMO, UDRO or a raw disk image.")

    @Option(help: "UDIF image, raw image or block device.") var source: String
    @Option(help: "UDZO (zlib), UDBZ (bzip2), ULMO (XZ, densest), UDRO (uncompressed) or RAW.") var format: String
    @Option(help: "Bytes per chunk of a UDIF output, a multiple of 512 from 64K to 64M (hdiutil writes 1M).")
    var chunkSize = "1M"
    @Option(help: "UDZO: zlib level, 1 (fastest) to 12 (densest).") var zlibLevel = "6"
    @Option(help: "The file (or device, for RAW) to write.") var output: String
    @Flag(help: "Replace OUTPUT if it exists.") var overwrite = false

    func run() throws {
        var converter = ImageConverter()
        let target = try ImageConverter.Target(parsing: format)
        converter.chunkSize = try ImageCreator.parseChunkSize(chunkSize)
        converter.zlibLevel = try ImageCreator.parseZlibLevel(zlibLevel)
        converter.overwrite = overwrite
        let toStdout = output == "-" || output == "/dev/stdout"
        converter.reporter = toStdout ? Reporter(.quiet) : .terminalOnly
        try converter.convert(source: source, to: target, output: output)
        if output == "-" || output == "/dev/stdout" { return }
        print("asr: converted \"\(source)\" to \(target.rawValue) \"\(output)\"")
    }
}
