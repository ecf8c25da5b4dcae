import CFilesystemIO

/// Runs one of CFilesystemIO's mappers (libext2fs, libntfs-3g) over a partition: the C side
/// reads through `Partition` and reports allocated runs back here.
final class LibraryReader {
    let partition: Partition
    var allocation: Allocation

    private init(_ partition: Partition) {
        self.partition = partition
        allocation = Allocation(length: partition.length)
    }

    static func map(_ partition: Partition, with mapper: (UnsafeMutablePointer<asr_fs_io>) -> Int32) throws(FilesystemError) -> [Range<UInt64>] {
        let reader = LibraryReader(partition)
        var message = [CChar](repeating: 0, count: 512)
        let result = withExtendedLifetime(reader) {
            message.withUnsafeMutableBufferPointer { text in
                var io = asr_fs_io(
                    read: { context, buffer, offset, count in
                        guard let context, let buffer, count <= UInt64(Int.max) else { return -1 }
                        let reader = Unmanaged<LibraryReader>.fromOpaque(context).takeUnretainedValue()
                        do {
                            try reader.partition.read(into: UnsafeMutableRawBufferPointer(start: buffer, count: Int(count)), at: offset)
                            return 0
                        } catch {
                            return -1
                        }
                    },
                    allocated: { context, start, length in
                        guard let context else { return }
                        Unmanaged<LibraryReader>.fromOpaque(context).takeUnretainedValue().allocation.add(start, count: length)
                    },
                    context: Unmanaged.passUnretained(reader).toOpaque(),
                    length: partition.length,
                    error: text.baseAddress,
                    error_capacity: Int32(text.count))
                return mapper(&io)
            }
        }
        guard result == 0 else {
            let bytes = message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
            throw .library(String(decoding: bytes, as: UTF8.self))
        }
        return reader.allocation.ranges
    }
}
