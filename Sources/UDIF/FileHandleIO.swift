import CSystem
#if canImport(Glibc)
import Glibc
#endif

/// A file descriptor read and written with pread/pwrite, safe from many threads at once.
public final class FileIO: RandomAccessFile {
    public let fd: Int32
    public let path: String

    public init(path: String, flags: Int32, mode: mode_t = 0o644) throws {
        let fd = open(path, flags | O_CLOEXEC, mode)
        guard fd >= 0 else { throw UDIFError("cannot open \(path): \(errnoString())") }
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }

    public func size() throws -> UInt64 {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw UDIFError("cannot stat \(path): \(errnoString())") }
        return UInt64(st.st_size)
    }

    /// Reads exactly `buffer.count` bytes or throws (a short file is an error, never zeros).
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw UDIFError("cannot read \(path) at byte \(offset + UInt64(done)): \(errnoString())")
            }
            if n == 0 { throw UDIFError("\(path) ends at byte \(offset + UInt64(done)), before the \(buffer.count) bytes wanted at \(offset)") }
            done += n
        }
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < buffer.count {
            let n = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw UDIFError("cannot write \(path) at byte \(offset + UInt64(done)): \(errnoString())")
            }
            done += n
        }
    }

    public func write(_ bytes: [UInt8], at offset: UInt64) throws {
        try bytes.withUnsafeBytes { try write($0, at: offset) }
    }

    public func truncate(to size: UInt64) throws {
        guard ftruncate(fd, off_t(size)) == 0 else { throw UDIFError("cannot set size of \(path): \(errnoString())") }
    }

    /// Starts writeback of a written range without waiting for it, so the final fsync of a
    /// large output does not have to flush everything at once.
    /// Where the first `size` bytes have data, as the filesystem allocates it (SEEK_DATA and
    /// SEEK_HOLE): holes are skipped.
    public func dataExtents(upTo size: UInt64) -> [(offset: UInt64, length: UInt64)] {
        var extents: [(offset: UInt64, length: UInt64)] = []
        var at: off_t = 0
        while UInt64(at) < size {
            let data = lseek(fd, at, 3)  // SEEK_DATA
            if data < 0 { break }  // ENXIO: only a hole remains
            var hole = lseek(fd, data, 4)  // SEEK_HOLE
            if hole < 0 || UInt64(hole) > size { hole = off_t(size) }
            if hole > data { extents.append((UInt64(data), UInt64(hole - data))) }
            at = hole
        }
        return extents
    }

    /// Makes a range read as zeros and frees its blocks; false where the filesystem cannot.
    public func punchHole(at offset: UInt64, length: UInt64) -> Bool {
        length == 0 || asr_punch_hole(fd, Int64(offset), Int64(length)) == 0
    }

    public func startWriteback(offset: UInt64, length: UInt64) {
        _ = asr_start_writeback(fd, Int64(offset), Int64(length))
    }

    public func sync() throws {
        guard fsync(fd) == 0 else { throw UDIFError("cannot flush \(path): \(errnoString())") }
    }
}

extension FileIO {
    /// A file expected to be small (a configuration, a block map), read front to back but
    /// never more than `limit` + 1 bytes: a huge file, /dev/zero or a pipe costs no more than
    /// that. More than `limit` bytes back means the file is too large.
    public static func readSmallFile(_ path: String, limit: Int) throws -> [UInt8] {
        let file = try FileIO(path: path, flags: O_RDONLY)
        var bytes: [UInt8] = []
        var piece = [UInt8](repeating: 0, count: 1 << 16)
        while bytes.count <= limit {
            let n = piece.withUnsafeMutableBytes { Glibc.read(file.fd, $0.baseAddress!, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw UDIFError("cannot read \(path): \(errnoString())") }
            if n == 0 { break }
            bytes += piece[0..<n]
        }
        return bytes
    }
}

public func errnoString(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }
