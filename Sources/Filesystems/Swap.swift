/// Linux swap: only the header page matters; the rest is scratch the kernel rewrites. The
/// signature ends the first page, whose size is the writer's page size (4 KiB to 64 KiB).
/// A swap area holding a hibernation image is needed whole to resume from it.
enum Swap {
    static let pageSizes: [UInt64] = [4096, 8192, 16384, 32768, 65536]
    static let swapSignatures = ["SWAPSPACE2", "SWAP-SPACE"]
    /// Written over the swap signature by swsusp, uswsusp and TuxOnIce while an image is held.
    static let hibernationSignatures = ["S1SUSPEND", "S2SUSPEND", "ULSUSPEND", "LINHIB0001"]

    static func recognise(_ partition: Partition) -> Recognised? {
        for page in pageSizes where page <= partition.length {
            guard let tail = try? partition.bytes(at: page - 10, count: 10) else { continue }
            if swapSignatures.contains(where: { tail.elementsEqual($0.utf8) }) {
                let length = partition.length
                return .mapped("swap") { () throws(FilesystemError) in
                    UsageMap(filesystem: "swap", method: "swap header", length: length, allocated: [0..<page])
                }
            }
            if hibernationSignatures.contains(where: { tail.starts(with: $0.utf8) }) { return .whole("swap holding a hibernation image") }
        }
        return nil
    }
}
