import NIOConcurrencyHelpers
import Netfilter
#if canImport(Glibc)
import Glibc
#endif

/// Watches managed namespaces for changes to their rules and routes (netlink notifications) and reports
/// which pod's namespace changed, so the agent re-checks it at once instead of at the next sweep.
///
/// One thread polls every subscription; `watch` and `unwatch` wake it to pick up the new set.
final class RuleChangeMonitor: @unchecked Sendable {
    private let subscriptions = NIOLockedValueBox<[String: KernelChangeSubscription]>([:])
    /// A pipe: writing to `wakeup.1` interrupts the poll.
    private let wakeup: (Int32, Int32)
    private let onChange: @Sendable (String) -> Void
    private let stopped = NIOLockedValueBox(false)
    private var thread: pthread_t?

    init(onChange: @escaping @Sendable (String) -> Void) {
        self.onChange = onChange
        var ends: [Int32] = [-1, -1]
        pipe(&ends)
        for end in ends {
            _ = fcntl(end, F_SETFD, FD_CLOEXEC)
            _ = fcntl(end, F_SETFL, O_NONBLOCK)
        }
        wakeup = (ends[0], ends[1])
    }

    deinit {
        close(wakeup.0)
        close(wakeup.1)
    }

    func start() {
        var thread = pthread_t()
        let retained = Unmanaged.passRetained(self)
        pthread_create(&thread, nil, { raw in
            let monitor = Unmanaged<RuleChangeMonitor>.fromOpaque(raw!).takeRetainedValue()
            monitor.run()
            return nil
        }, retained.toOpaque())
        self.thread = thread
    }

    func stop() {
        stopped.withLockedValue { $0 = true }
        wake()
        if let thread { pthread_join(thread, nil) }
        thread = nil
    }

    func watch(_ key: String, _ subscription: KernelChangeSubscription) {
        subscriptions.withLockedValue { $0[key] = subscription }
        wake()
    }

    func unwatch(_ key: String) {
        subscriptions.withLockedValue { $0[key] = nil }
        wake()
    }

    private func wake() {
        var byte: UInt8 = 1
        _ = write(wakeup.1, &byte, 1)
    }

    private func run() {
        while !stopped.withLockedValue({ $0 }) {
            let watched = subscriptions.withLockedValue { $0 }
            var descriptors = [pollfd(fd: wakeup.0, events: Int16(POLLIN), revents: 0)]
            var owners: [(String, KernelChangeSubscription)] = []
            for (key, subscription) in watched {
                for fd in subscription.descriptors {
                    descriptors.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0))
                    owners.append((key, subscription))
                }
            }
            let ready = poll(&descriptors, nfds_t(descriptors.count), -1)
            guard ready > 0 else { continue }
            if descriptors[0].revents != 0 {
                var bytes = [UInt8](repeating: 0, count: 64)
                while read(wakeup.0, &bytes, bytes.count) > 0 {}
            }
            var changed = Set<String>()
            for (index, descriptor) in descriptors.enumerated().dropFirst() where descriptor.revents != 0 {
                let (key, subscription) = owners[index - 1]
                if subscription.drain() { changed.insert(key) }
            }
            changed.forEach(onChange)
        }
    }
}
