import CLinux
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A file read and written by offset (pread/pwrite), safe from many threads at once.
public final class FileIO: Sendable {
    public let descriptor: FileDescriptor
    public let path: String
    public var fd: Int32 { descriptor.rawValue }

    /// `flags` are open(2)'s: an access mode with O_CREAT, O_EXCL, O_DIRECT and the like.
    /// Files it creates are 0600: an image of a root-only device must not be readable by all.
    public init(path: String, flags: Int32, mode: mode_t = 0o600) throws(SystemError) {
        do {
            descriptor = try FileDescriptor.open(
                FilePath(path), .init(rawValue: flags & O_ACCMODE),
                options: FileDescriptor.OpenOptions(rawValue: flags & ~O_ACCMODE).union(.closeOnExec),
                permissions: FilePermissions(rawValue: mode))
        } catch { throw .open(path: path, error as? Errno ?? .ioError) }
        self.path = path
    }

    deinit { try? descriptor.close() }

    public func size() throws(SystemError) -> UInt64 {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .stat(path: path, Errno(rawValue: errno)) }
        return UInt64(st.st_size)
    }

    /// Reads exactly `buffer.count` bytes or throws (a short file is an error, never zeros).
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(SystemError) {
        var done = 0
        while done < buffer.count {
            let n: Int
            do {
                n = try descriptor.read(fromAbsoluteOffset: Int64(offset) + Int64(done),
                                        into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
            } catch { throw .read(path: path, offset: offset + UInt64(done), error as? Errno ?? .ioError) }
            if n == 0 { throw .endOfFile(path: path, offset: offset + UInt64(done), wanted: buffer.count, start: offset) }
            done += n
        }
    }

    public func read(at offset: UInt64, count: Int) throws(SystemError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { buffer in Result { () throws(SystemError) in try read(into: buffer, at: offset) } }.get()
        return bytes
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws(SystemError) {
        var done = 0
        while done < buffer.count {
            do {
                done += try descriptor.write(toAbsoluteOffset: Int64(offset) + Int64(done),
                                             UnsafeRawBufferPointer(rebasing: buffer[done...]))
            } catch { throw .write(path: path, offset: offset + UInt64(done), error as? Errno ?? .ioError) }
        }
    }

    public func write(_ bytes: [UInt8], at offset: UInt64) throws(SystemError) {
        try bytes.withUnsafeBytes { buffer in Result { () throws(SystemError) in try write(buffer, at: offset) } }.get()
    }

    public func truncate(to size: UInt64) throws(SystemError) {
        do { try descriptor.resize(to: Int64(size)) } catch { throw .resize(path: path, error as? Errno ?? .ioError) }
    }

    /// Where the first `size` bytes have data, as the filesystem allocates it (SEEK_DATA and
    /// SEEK_HOLE): holes are skipped. Where the kernel cannot tell, the rest counts as data.
    public func dataExtents(upTo size: UInt64) -> [(offset: UInt64, length: UInt64)] {
        var extents: [(offset: UInt64, length: UInt64)] = []
        var at: Int64 = 0
        while UInt64(at) < size {
            let data: Int64
            do { data = try descriptor.seek(offset: at, from: Kernel.seekData) } catch {
                // ENXIO: only a hole remains.
                if (error as? Errno) != .noSuchAddressOrDevice { extents.append((UInt64(at), size - UInt64(at))) }
                break
            }
            var hole = (try? descriptor.seek(offset: data, from: Kernel.seekHole)) ?? Int64(size)
            if UInt64(hole) > size { hole = Int64(size) }
            if hole > data { extents.append((UInt64(data), UInt64(hole - data))) }
            at = hole
        }
        return extents
    }

    /// Makes a range read as zeros and frees its blocks; false where the filesystem cannot.
    public func punchHole(at offset: UInt64, length: UInt64) -> Bool {
        length == 0 || asr_punch_hole(fd, Int64(offset), Int64(length)) == 0
    }

    /// Starts writeback of a written range without waiting for it, so the final fsync of a
    /// large output does not have to flush everything at once.
    public func startWriteback(offset: UInt64, length: UInt64) {
        _ = asr_start_writeback(fd, Int64(offset), Int64(length))
    }

    /// Writes a range out to the device, waits for it and drops it from the page cache, so
    /// the next read of it comes from the device.
    public func flushAndDrop(offset: UInt64, length: UInt64) {
        _ = asr_flush_range(fd, Int64(offset), Int64(length))
        _ = posix_fadvise(fd, off_t(offset), off_t(length), POSIX_FADV_DONTNEED)
    }

    /// True when the range is a hole (reads as zeros without being stored); false when any
    /// of it has data or the filesystem cannot tell.
    public func isHole(offset: UInt64, length: UInt64) -> Bool {
        guard length > 0 else { return true }
        do {
            let data = try descriptor.seek(offset: Int64(offset), from: Kernel.seekData)
            return UInt64(data) >= offset + length
        } catch {
            return (error as? Errno) == .noSuchAddressOrDevice  // ENXIO: nothing but hole from here to the end
        }
    }

    public func sync() throws(SystemError) {
        do { try retryingInterrupts { fsync(fd) } } catch { throw .flush(path: path, error) }
    }

    /// A file expected to be small (a configuration, a block map), read front to back but
    /// never more than `limit` + 1 bytes: a huge file, /dev/zero or a pipe costs no more than
    /// that. More than `limit` bytes back means the file is too large.
    public static func readSmallFile(_ path: String, limit: Int) throws(SystemError) -> [UInt8] {
        let file = try FileIO(path: path, flags: O_RDONLY)
        var bytes: [UInt8] = []
        var piece = [UInt8](repeating: 0, count: 1 << 16)
        while bytes.count <= limit {
            let n: Int
            do { n = try piece.withUnsafeMutableBytes { try file.descriptor.read(into: $0) } } catch {
                throw .read(path: path, offset: UInt64(bytes.count), error as? Errno ?? .ioError)
            }
            if n == 0 { break }
            bytes += piece[0..<n]
        }
        return bytes
    }
}
