import SystemSupport

/// A FAT12, FAT16 or FAT32 tree, parsed here: directories with their long (VFAT) names, files
/// by their cluster chains, DOS times. A node is numbered by where its directory entry lies
/// (its byte offset / 32 + 2; the root is 1), so a node's attributes are read straight from
/// its entry. FAT has no owners, modes or links: files show as root's, 0644 (0444 read-only),
/// folders 0755, as Linux's vfat does with a 022 umask; times are taken as UTC.
final class FATVolume: VolumeReader, Sendable {
    let filesystem: String
    let label: String
    let rootNode: UInt64 = 1
    let partition: Partition
    let g: FAT.Geometry
    let rootCluster: UInt64
    private let caches = Locked(Caches())

    struct Caches {
        var fatPages: [UInt64: [UInt8]] = [:]
        /// Chains by first cluster, and whether each reached its end.
        var chains: [UInt64: (clusters: [UInt64], ended: Bool)] = [:]
        var listings: [UInt64: [(name: String, node: UInt64, entry: [UInt8])]] = [:]
    }

    static let fatPageBytes: UInt64 = 1 << 16
    static let maxCached = 1 << 14
    static let maxEntries = 1 << 16  // FAT allows 65536 entries in a directory

    init(_ partition: Partition, boot: [UInt8]) throws(VolumeError) {
        self.partition = partition
        do throws(FilesystemError) { g = try FAT.geometry(boot, partitionLength: partition.length) } catch { throw .damaged(error.description) }
        filesystem = g.kind
        rootCluster = g.entryBits == 32 ? boot.le32(44) : 0
        if g.entryBits == 32, rootCluster < 2 || rootCluster >= g.clusters + 2 {
            throw .damaged("its root directory cluster \(rootCluster) is outside its \(g.clusters) clusters")
        }
        let bpbLabel = g.entryBits == 32 ? Array(boot[71..<82]) : Array(boot[43..<54])
        label = Self.trimmedLabel(bpbLabel)
        _ = try rawEntries(of: rootNode)
    }

    static func trimmedLabel(_ bytes: [UInt8]) -> String {
        let text = String(decoding: bytes.map { $0 < 0x20 || $0 > 0x7E ? UInt8(ascii: "_") : $0 }, as: UTF8.self)
            .trimmingTrailingSpaces()
        return text == "NO NAME" ? "" : text
    }

    // MARK: The FAT

    /// The FAT entry of `cluster` (first FAT copy), read in 64 KiB pages.
    func next(_ cluster: UInt64) throws(VolumeError) -> UInt64 {
        let byte = cluster * g.entryBits / 8
        let page = byte / Self.fatPageBytes
        let fatBytes = g.fatSectors * g.sectorSize
        let bytes = try caches.withLock { (c: inout Caches) throws(VolumeError) -> [UInt8] in
            if let hit = c.fatPages[page] { return hit }
            let start = page * Self.fatPageBytes
            // One extra byte: a FAT12 entry may straddle the page's end.
            let count = Int(min(Self.fatPageBytes + 1, fatBytes - start))
            let read: [UInt8]
            do throws(FilesystemError) {
                read = try partition.bytes(at: g.reservedSectors * g.sectorSize + start, count: count)
            } catch {
                throw .damaged(error.description)
            }
            if c.fatPages.count >= 256 { c.fatPages.removeAll() }
            c.fatPages[page] = read
            return read
        }
        let at = Int(byte - page * Self.fatPageBytes)
        switch g.entryBits {
        case 12:
            let v = bytes.le16(at)
            return cluster & 1 == 0 ? v & 0xFFF : v >> 4
        case 16: return bytes.le16(at)
        default: return bytes.le32(at) & 0x0FFF_FFFF
        }
    }

    var endOfChain: UInt64 { g.entryBits == 12 ? 0xFF8 : g.entryBits == 16 ? 0xFFF8 : 0x0FFF_FFF8 }

    /// The clusters of a chain from `first`, at most `limit`: a chain that loops or leaves the
    /// volume is damage.
    func chain(from first: UInt64, limit: UInt64) throws(VolumeError) -> [UInt64] {
        if let hit = caches.withLock({ $0.chains[first] }), hit.ended || UInt64(hit.clusters.count) >= limit {
            return Array(hit.clusters.prefix(Int(clamping: limit)))
        }
        var clusters: [UInt64] = []
        var seen = Set<UInt64>()
        var c = first
        var ended = false
        while UInt64(clusters.count) < limit {
            guard c >= 2, c < g.clusters + 2 else { throw .damaged("a cluster chain reaches cluster \(c), outside the volume's \(g.clusters)") }
            guard seen.insert(c).inserted else { throw .damaged("a cluster chain loops back to cluster \(c)") }
            clusters.append(c)
            let n = try next(c)
            if n >= endOfChain {
                ended = true
                break
            }
            c = n
        }
        caches.withLock { cache in
            if cache.chains.count >= Self.maxCached { cache.chains.removeAll() }
            cache.chains[first] = (clusters, ended)
        }
        return clusters
    }

    func clusterOffset(_ cluster: UInt64) -> UInt64 { g.firstDataSector * g.sectorSize + (cluster - 2) * g.clusterBytes }

    // MARK: Directories

    /// A directory's bytes: the FAT12/16 root region, or its cluster chain.
    private func directoryBytes(_ node: UInt64, firstCluster: UInt64) throws(VolumeError) -> (bytes: [UInt8], base: [UInt64]) {
        if node == rootNode && g.entryBits != 32 {
            let start = (g.reservedSectors + g.fatCount * g.fatSectors) * g.sectorSize
            let bytes = try read(at: start, count: Int(g.rootDirectorySectors * g.sectorSize))
            return (bytes, [start])
        }
        let clusters = try chain(from: firstCluster, limit: UInt64(Self.maxEntries) * 32 / g.clusterBytes + 1)
        var bytes: [UInt8] = []
        for c in clusters { bytes += try read(at: clusterOffset(c), count: Int(g.clusterBytes)) }
        return (bytes, clusters.map(clusterOffset))
    }

    private func read(at offset: UInt64, count: Int) throws(VolumeError) -> [UInt8] {
        do throws(FilesystemError) { return try partition.bytes(at: offset, count: count) } catch { throw .damaged(error.description) }
    }

    /// The entry (32 bytes) of a node, read where it lies.
    private func entry(_ node: UInt64) throws(VolumeError) -> [UInt8] {
        guard node >= 2, let offset = (node - 2).times(32), offset <= partition.length - 32 else { throw .notFound }
        return try read(at: offset, count: 32)
    }

    private func firstCluster(_ e: [UInt8]) -> UInt64 { (g.entryBits == 32 ? e.le16(20) << 16 : 0) | e.le16(26) }

    private func rawEntries(of node: UInt64) throws(VolumeError) -> [(name: String, node: UInt64, entry: [UInt8])] {
        if let hit = caches.withLock({ $0.listings[node] }) { return hit }
        let first: UInt64
        if node == rootNode {
            first = rootCluster
        } else {
            let e = try entry(node)
            guard e[11] & 0x10 != 0 else { throw .notDirectory }
            first = firstCluster(e)
            if first == 0 { return [] }
        }
        let (bytes, bases) = try directoryBytes(node, firstCluster: first)
        let perCluster = node == rootNode && g.entryBits != 32 ? bytes.count : Int(g.clusterBytes)
        var found: [(String, UInt64, [UInt8])] = []
        var long: [Int: [UInt16]] = [:]
        var longChecksum: UInt8? = nil
        for i in stride(from: 0, to: bytes.count - 31, by: 32) {
            let e = Array(bytes[i..<(i + 32)])
            if e[0] == 0 { break }
            if e[0] == 0xE5 { long = [:]; continue }
            if e[11] & 0x3F == 0x0F {
                // A long-name piece: 13 UTF-16 units, pieces numbered from the name's end.
                let order = Int(e[0] & 0x1F)
                if e[0] & 0x40 != 0 { long = [:]; longChecksum = e[13] }
                var units: [UInt16] = []
                for at in [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30] { units.append(UInt16(e.le16(at))) }
                long[order] = units
                continue
            }
            defer { long = [:]; longChecksum = nil }
            if e[11] & 0x08 != 0 { continue }  // the volume label
            let short = Self.shortName(e)
            if short == "." || short == ".." { continue }
            var name = short
            if !long.isEmpty, longChecksum == Self.checksum(e), let count = long.keys.max(), (1...count).allSatisfy({ long[$0] != nil }) {
                let units = (1...count).flatMap { long[$0]! }.prefix { $0 != 0 }
                name = String(decoding: units, as: UTF16.self)
            }
            guard !name.isEmpty, !name.contains("/"), !name.unicodeScalars.contains("\0") else { continue }
            let offset = bases[i / perCluster] + UInt64(i % perCluster)
            found.append((name, offset / 32 + 2, e))
            guard found.count <= Self.maxEntries else { throw .damaged("a directory holds more than \(Self.maxEntries) entries") }
        }
        caches.withLock { c in
            if c.listings.count >= Self.maxCached { c.listings.removeAll() }
            c.listings[node] = found
        }
        return found
    }

    /// The 8.3 name, lowercased where Windows NT's flags say (byte 12: 0x08 base, 0x10 extension).
    static func shortName(_ e: [UInt8]) -> String {
        var base = Array(e[0..<8])
        let ext = Array(e[8..<11])
        if base[0] == 0x05 { base[0] = 0xE5 }
        func text(_ b: [UInt8], lower: Bool) -> String {
            let trimmed = Array(b.reversed().drop { $0 == 0x20 }.reversed())
            let s = String(trimmed.map { Character(Unicode.Scalar($0)) })  // Latin-1 for bytes past ASCII
            return lower ? s.lowercased() : s
        }
        let b = text(base, lower: e[12] & 0x08 != 0), x = text(ext, lower: e[12] & 0x10 != 0)
        return x.isEmpty ? b : b + "." + x
    }

    static func checksum(_ e: [UInt8]) -> UInt8 {
        var sum: UInt8 = 0
        for i in 0..<11 { sum = ((sum & 1) << 7 | sum >> 1) &+ e[i] }
        return sum
    }

    // MARK: VolumeReader

    func entries(of directory: UInt64) throws(VolumeError) -> [NodeEntry] {
        try rawEntries(of: directory).map { NodeEntry(name: $0.name, node: $0.node, kind: $0.entry[11] & 0x10 != 0 ? .directory : .file) }
    }

    /// A DOS date and time as seconds since 1970, UTC.
    static func time(date: UInt64, time: UInt64) -> Timestamp {
        let year = Int(1980 + (date >> 9)), month = Int(max(1, min(12, (date >> 5) & 15))), day = Int(max(1, date & 31))
        // Days from 1970-01-01 to the date (proleptic Gregorian, the civil-from-days algorithm).
        let y = month <= 2 ? year - 1 : year
        let era = y / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146097 + doe - 719468
        let seconds = Int64(days) * 86400 + Int64(time >> 11) * 3600 + Int64((time >> 5) & 63) * 60 + Int64(time & 31) * 2
        return Timestamp(seconds: seconds)
    }

    func attributes(of node: UInt64) throws(VolumeError) -> NodeAttributes {
        if node == rootNode {
            let subdirectories = try entries(of: node).filter { $0.kind == .directory }.count
            let zero = Timestamp(seconds: 0)
            return NodeAttributes(kind: .directory, permissions: 0o755, uid: 0, gid: 0, size: 0,
                                  linkCount: UInt32(clamping: 2 + subdirectories), accessed: zero, modified: zero, changed: zero)
        }
        let e = try entry(node)
        guard e[0] != 0, e[0] != 0xE5, e[11] & 0x3F != 0x0F else { throw .notFound }
        let isDirectory = e[11] & 0x10 != 0
        let readOnly = e[11] & 0x01 != 0
        let modified = Self.time(date: e.le16(24), time: e.le16(22))
        var links: UInt32 = 1
        if isDirectory { links = UInt32(clamping: 2 + (try entries(of: node).filter { $0.kind == .directory }.count)) }
        var a = NodeAttributes(kind: isDirectory ? .directory : .file,
                               permissions: (isDirectory ? 0o755 : 0o644) & (readOnly ? 0o555 : 0o777), uid: 0, gid: 0,
                               size: isDirectory ? 0 : e.le32(28), linkCount: links,
                               accessed: Self.time(date: e.le16(18), time: 0), modified: modified, changed: modified)
        a.allocatedBytes = isDirectory ? 0 : (e.le32(28) + g.clusterBytes - 1) / g.clusterBytes * g.clusterBytes
        return a
    }

    func read(_ node: UInt64, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(VolumeError) -> Int {
        let e = try entry(node)
        guard e[11] & 0x10 == 0 else { throw .isDirectory }
        let size = e.le32(28)
        guard offset < size, buffer.count > 0 else { return 0 }
        let count = Int(min(UInt64(buffer.count), size - offset))
        let clusters = try chain(from: firstCluster(e), limit: (size + g.clusterBytes - 1) / g.clusterBytes)
        var done = 0
        while done < count {
            let at = offset + UInt64(done)
            let index = Int(at / g.clusterBytes)
            guard index < clusters.count else { throw .damaged("a file's cluster chain ends before its \(size) bytes") }
            let within = at % g.clusterBytes
            // Consecutive clusters are read in one go.
            var run = 1
            while index + run < clusters.count, clusters[index + run] == clusters[index] + UInt64(run) { run += 1 }
            let n = Int(min(UInt64(count - done), UInt64(run) * g.clusterBytes - within))
            do throws(FilesystemError) {
                try partition.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + n)]), at: clusterOffset(clusters[index]) + within)
            } catch {
                throw .damaged(error.description)
            }
            done += n
        }
        return count
    }

    func storedOffset(of node: UInt64, at offset: UInt64) -> UInt64? {
        guard let e = try? entry(node), e[11] & 0x10 == 0, offset < e.le32(28),
              let clusters = try? chain(from: firstCluster(e), limit: (e.le32(28) + g.clusterBytes - 1) / g.clusterBytes),
              Int(offset / g.clusterBytes) < clusters.count else { return nil }
        return clusterOffset(clusters[Int(offset / g.clusterBytes)]) + offset % g.clusterBytes
    }

    func linkTarget(of node: UInt64) throws(VolumeError) -> [UInt8] { throw .notSymbolicLink }
    func extendedAttributeNames(of node: UInt64) throws(VolumeError) -> [String] { [] }
    func extendedAttribute(_ name: String, of node: UInt64) throws(VolumeError) -> [UInt8] { throw .noAttribute }
}

extension String {
    func trimmingTrailingSpaces() -> String {
        var s = Substring(self)
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}
