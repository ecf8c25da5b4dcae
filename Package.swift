// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "asr",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "asr", targets: ["asr"]),
        .library(name: "UDIF", targets: ["UDIF"]),
        .library(name: "Imaging", targets: ["Imaging"]),
        .library(name: "Filesystems", targets: ["Filesystems"]),
        .library(name: "Multicast", targets: ["Multicast"]),
        .library(name: "ImageFS", targets: ["ImageFS"]),
        .library(name: "StatusServer", targets: ["StatusServer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        // The status server (`asr server --status`): HTTP/1 from swift-nio, metrics counted through
        // swift-metrics into swift-prometheus's registry.
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        .systemLibrary(name: "CDeflate", pkgConfig: "libdeflate", providers: [.apt(["libdeflate-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CBzip2", providers: [.apt(["libbz2-dev"])]),
        .systemLibrary(name: "CLzma", pkgConfig: "liblzma", providers: [.apt(["liblzma-dev"])]),
        // Linux constants and calls by name (a C target: its header includes no system header).
        .target(name: "CLinux"),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CFuse3", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        .systemLibrary(name: "CAvahi", pkgConfig: "avahi-client", providers: [.apt(["libavahi-client-dev"])]),
        .systemLibrary(name: "CFuzzer"),
        .systemLibrary(name: "CExt2fs", pkgConfig: "ext2fs", providers: [.apt(["libext2fs-dev"])]),
        .systemLibrary(name: "CNtfs3g", pkgConfig: "libntfs-3g", providers: [.apt(["ntfs-3g-dev"])]),
        // libext2fs's io_manager and libntfs-3g's device operations over a read callback, so
        // both libraries read a ByteSource at a partition's offset, and can never write.
        // libext2fs's error texts come from libcom_err, which its pkg-config file leaves out.
        .target(name: "CFilesystemIO", dependencies: ["CExt2fs", "CNtfs3g"], linkerSettings: [.linkedLibrary("com_err")]),
        .target(name: "SystemSupport", dependencies: ["CLinux", .product(name: "SystemPackage", package: "swift-system")]),
        .target(name: "UDIF", dependencies: ["SystemSupport", "CDeflate", "CZlib", "CBzip2", "CLzma", .product(name: "Crypto", package: "swift-crypto")]),
        // Filesystem structures: which filesystem a partition holds and what it has allocated.
        .target(name: "Filesystems", dependencies: ["UDIF", "SystemSupport", "CFilesystemIO"]),
        .target(name: "Imaging", dependencies: [
            "UDIF", "SystemSupport", "Filesystems", "CCurl", .product(name: "SystemPackage", package: "swift-system"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "Multicast", dependencies: [
            "UDIF", "Imaging", "SystemSupport", "CAvahi", .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        .target(name: "ImageFS", dependencies: [
            "UDIF", "Imaging", "Filesystems", "SystemSupport", "CFuse3", .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        // `asr server --status`: the session page, /status.json and /metrics over HTTP/1.
        .target(name: "StatusServer", dependencies: [
            "Multicast", "SystemSupport",
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"), .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // What the command line does before parsing: Apple's single-dash syntax.
        .target(name: "CommandSupport"),
        .executableTarget(name: "asr", dependencies: [
            "Imaging", "UDIF", "SystemSupport", "Multicast", "ImageFS", "CommandSupport", "StatusServer",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // The fuzz harnesses, shared by `make fuzz` (libFuzzer, Sources/Fuzz) and the CI pass (FuzzTests).
        .target(name: "FuzzTargets", dependencies: [
            "UDIF", "Imaging", "Multicast", "Filesystems", "SystemSupport", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .executableTarget(name: "Fuzz", dependencies: ["FuzzTargets", "CFuzzer"]),
        // Chunk decoding speed for bench/lzfse.sh: timings stay out of the tests.
        .executableTarget(name: "DecodeBench", dependencies: ["UDIF"]),
        // What every test target shares: fixtures, the asr binary and other programs run as a
        // user runs them, mounts, nginx, and the namespace labs (hosts on a bridge).
        .target(name: "TestSupport", dependencies: [
            "SystemSupport", "UDIF", "ImageFS", .product(name: "Crypto", package: "swift-crypto"),
        ], path: "Tests/TestSupport"),
        .testTarget(name: "UDIFTests", dependencies: ["SystemSupport", "UDIF", "TestSupport", .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(name: "ImagingTests", dependencies: ["SystemSupport",
            "Imaging", "UDIF", "Filesystems", "TestSupport", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .testTarget(name: "MulticastTests", dependencies: ["SystemSupport", "Multicast", "Imaging", "UDIF", "TestSupport", .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(name: "ImageFSTests", dependencies: ["SystemSupport", 
            "ImageFS", "Imaging", "UDIF", "TestSupport", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .testTarget(name: "FuzzTests", dependencies: ["SystemSupport", "FuzzTargets", "TestSupport", "UDIF", "Filesystems"], exclude: ["Regressions"]),
        .testTarget(name: "CommandSupportTests", dependencies: ["CommandSupport", "SystemSupport"]),
        .testTarget(name: "StatusServerTests", dependencies: [
            "StatusServer", "Multicast", "SystemSupport",
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        .testTarget(name: "FilesystemsTests", dependencies: [
            "Filesystems", "UDIF", "TestSupport", "SystemSupport", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // The asr command end to end: create, scan, restore, verify, convert, info, trust.
        .testTarget(name: "CommandLineTests", dependencies: ["SystemSupport",
            "UDIF", "ImageFS", "Filesystems", "TestSupport", "Multicast", "StatusServer", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Real FUSE mounts of images and writable disks (root and /dev/fuse).
        .testTarget(name: "MountTests", dependencies: ["SystemSupport", "UDIF", "ImageFS", "Filesystems", "TestSupport"]),
        // Namespace labs: servers and clients on hosts the test makes (root, ip netns, Avahi).
        .testTarget(name: "LabTests", dependencies: ["SystemSupport",
            "UDIF", "Imaging", "Multicast", "StatusServer", "TestSupport", .product(name: "Crypto", package: "swift-crypto"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
