#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import NIOPosix

/// The randomness the request path draws on (weighted route choice, endpoint choice, `x-request-id`):
/// the kernel's CSPRNG (`/dev/urandom`), read 4 KiB at a time into a buffer per thread, as Envoy buffers
/// BoringSSL's bytes for its request IDs. `SystemRandomNumberGenerator` makes one `getrandom` call per number, which was
/// three system calls per request.
public struct RequestRandomness: RandomNumberGenerator {
    public init() {}

    public mutating func next() -> UInt64 { Self.buffer.next() }

    // Each thread sees only its own buffer.
    nonisolated(unsafe) private static let perThread = ThreadSpecificVariable<Buffer>()

    private static var buffer: Buffer {
        if let buffer = perThread.currentValue { return buffer }
        let made = Buffer()
        perThread.currentValue = made
        return made
    }

    /// One thread's unread random words.
    private final class Buffer {
        private static let words = 512
        private let storage = UnsafeMutablePointer<UInt64>.allocate(capacity: Buffer.words)
        private var position = Buffer.words

        deinit { storage.deallocate() }

        func next() -> UInt64 {
            if position == Self.words { refill() }
            defer { position += 1 }
            return storage[position]
        }

        private func refill() {
            let bytes = Self.words * MemoryLayout<UInt64>.size
            let raw = UnsafeMutableRawPointer(storage)
            var filled = 0
            let device = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
            if device >= 0 {
                while filled < bytes {
                    let got = read(device, raw + filled, bytes - filled)
                    if got > 0 { filled += got } else if got == 0 || errno != EINTR { break }
                }
                close(device)
            }
            // Without the device (or short of bytes): the system generator, one word at a time.
            var system = SystemRandomNumberGenerator()
            filled -= filled % 8
            while filled < bytes {
                raw.storeBytes(of: system.next(), toByteOffset: filled, as: UInt64.self)
                filled += 8
            }
            position = 0
        }
    }
}
