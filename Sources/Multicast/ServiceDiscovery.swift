import CAvahi
import SystemSupport
import Foundation
import Synchronization

/// DNS Service Discovery through Avahi (its D-Bus client library): a server announces its
/// session as `_asr._tcp` on its control port; clients browse for sessions.
public enum ServiceDiscovery {
    package static let serviceType = "_asr._tcp"

    /// What a session's TXT record says, and where its server is.
    public struct Session: Codable, Sendable, Equatable {
        public var name: String
        public var host: String
        public var address: String
        public var port: UInt16
        public var image: String?
        public var size: UInt64?
        /// The image's identity as announced: 64 hex digits from a server of this version.
        /// Anyone can announce anything; a pin compares all of it, and the server's WELCOME
        /// is checked against the pin again.
        public var identity: String?
        public var rate: UInt64?
        public var group: String?
        public var protocolVersion: Int?

        /// TXT strings as the server publishes them.
        static func txt(image: String, size: UInt64, identity: [UInt8], rate: UInt64, group: String) -> [String] {
            // The whole identity (64 hex digits; a TXT string holds 255 bytes): a prefix would
            // let a rogue announcement match a pin with a different image behind it.
            ["image=\(image)", "size=\(size)", "identity=\(hex(identity))", "rate=\(rate)", "group=\(group)", "proto=\(ControlMessage.protocolVersion)"]
        }

        mutating func apply(txt entries: [String]) {
            for entry in entries {
                guard let eq = entry.firstIndex(of: "=") else { continue }
                let key = entry[..<eq]
                let value = String(entry[entry.index(after: eq)...])
                switch key {
                case "image": image = value
                case "size": size = UInt64(value)
                case "identity": identity = value
                case "rate": rate = UInt64(value)
                case "group": group = value
                case "proto": protocolVersion = Int(value)
                default: continue
                }
            }
        }
    }

    static func errorText(_ code: Int32) -> String {
        avahi_strerror(code).map { String(cString: $0) } ?? "error \(code)"
    }
}

/// Keeps a session announced while it lives. Without a running avahi-daemon it announces
/// nothing and says so once, through `log`.
// Unchecked: owns Avahi handles; they are used on the poll thread, and by `stop()` only once it ended.
public final class ServiceAnnouncer: @unchecked Sendable {
    private let poll: OpaquePointer
    private var client: OpaquePointer?
    private var group: OpaquePointer?
    private var name: String
    private let port: UInt16
    private let txt: [String]
    private let log: @Sendable (String) -> Void
    private var thread: Thread?

    public init(name: String, port: UInt16, image: String, size: UInt64, identity: [UInt8], rate: UInt64, group: String,
                log: @escaping @Sendable (String) -> Void) {
        poll = avahi_simple_poll_new()
        self.name = name
        self.port = port
        self.log = log
        txt = ServiceDiscovery.Session.txt(image: image, size: size, identity: identity, rate: rate, group: group)
        var error: Int32 = 0
        let me = Unmanaged.passUnretained(self).toOpaque()
        client = avahi_client_new(avahi_simple_poll_get(poll), AvahiClientFlags(0), { client, state, me in
            guard let me else { return }
            Unmanaged<ServiceAnnouncer>.fromOpaque(me).takeUnretainedValue().clientChanged(client, state)
        }, me, &error)
        guard client != nil else {
            log("DNS Service Discovery: Avahi is not running (\(ServiceDiscovery.errorText(error))); serving without announcing")
            return
        }
        let thread = Thread { [self] in _ = avahi_simple_poll_loop(self.poll) }
        thread.name = "avahi"
        self.thread = thread
        thread.start()
    }

    /// Runs on the poll thread (or inside avahi_client_new).
    private func clientChanged(_ client: OpaquePointer?, _ state: AvahiClientState) {
        switch state {
        case AVAHI_CLIENT_S_RUNNING: publish(client)
        case AVAHI_CLIENT_S_COLLISION, AVAHI_CLIENT_S_REGISTERING: if let group { avahi_entry_group_reset(group) }
        case AVAHI_CLIENT_FAILURE: log("DNS Service Discovery: Avahi failed (\(ServiceDiscovery.errorText(avahi_client_errno(client)))); no longer announced")
        default: break
        }
    }

    private func publish(_ client: OpaquePointer?) {
        if group == nil {
            let me = Unmanaged.passUnretained(self).toOpaque()
            group = avahi_entry_group_new(client, { group, state, me in
                guard let me, state == AVAHI_ENTRY_GROUP_COLLISION else { return }
                Unmanaged<ServiceAnnouncer>.fromOpaque(me).takeUnretainedValue().renameAndRetry(group)
            }, me)
        }
        guard let group, avahi_entry_group_is_empty(group) != 0 else { return }
        var list: UnsafeMutablePointer<AvahiStringList>? = nil
        for entry in txt.reversed() { list = avahi_string_list_add(list, entry) }
        defer { avahi_string_list_free(list) }
        let status = avahi_entry_group_add_service_strlst(group, AvahiIfIndex(AVAHI_IF_UNSPEC), AvahiProtocol(AVAHI_PROTO_INET), AvahiPublishFlags(0), name,
                                                          ServiceDiscovery.serviceType, nil, nil, port, list)
        if status == Int32(AVAHI_ERR_COLLISION) { return renameAndRetry(group) }
        guard status == 0, avahi_entry_group_commit(group) == 0 else {
            log("DNS Service Discovery: cannot announce \(name): \(ServiceDiscovery.errorText(status))")
            return
        }
        log("announced as \"\(name)\" (\(ServiceDiscovery.serviceType))")
    }

    /// Another session has the name: take Avahi's next alternative ("name #2").
    private func renameAndRetry(_ group: OpaquePointer?) {
        if let alternative = avahi_alternative_service_name(name) {
            name = String(cString: alternative)
            avahi_free(alternative)
        }
        avahi_entry_group_reset(group)
        publish(avahi_entry_group_get_client(group))
    }

    public func stop() {
        guard client != nil else { return }
        avahi_simple_poll_quit(poll)
        while thread?.isFinished == false { usleep(5_000) }
        avahi_client_free(client)
        client = nil
    }

    deinit {
        stop()
        avahi_simple_poll_free(poll)
    }
}

/// Finds announced sessions: browses `_asr._tcp` and resolves each service found.
/// Used on one thread: Avahi calls back from inside `browse`'s poll.
public final class ServiceBrowser {
    private let poll: OpaquePointer
    private var client: OpaquePointer?
    private var sessions: [ServiceDiscovery.Session] = []
    private var pending = 0
    private var allForNow = false
    private var failure: MulticastError?

    public init() { poll = avahi_simple_poll_new() }

    deinit {
        if let client { avahi_client_free(client) }
        avahi_simple_poll_free(poll)
    }

    /// Sessions seen within `timeout` seconds; stops early once `until` accepts one.
    public func browse(timeout: Double, until: ((ServiceDiscovery.Session) -> Bool)? = nil) throws -> [ServiceDiscovery.Session] {
        var error: Int32 = 0
        client = avahi_client_new(avahi_simple_poll_get(poll), AvahiClientFlags(0), { _, _, _ in }, nil, &error)
        guard let client else {
            throw MulticastError.avahiNotRunning(ServiceDiscovery.errorText(error))
        }
        let me = Unmanaged.passUnretained(self).toOpaque()
        guard avahi_service_browser_new(client, AvahiIfIndex(AVAHI_IF_UNSPEC), AvahiProtocol(AVAHI_PROTO_INET), ServiceDiscovery.serviceType, nil,
                                        AvahiLookupFlags(0), { browser, interface, proto, event, name, type, domain, _, me in
            guard let me else { return }
            Unmanaged<ServiceBrowser>.fromOpaque(me).takeUnretainedValue()
                .found(browser, interface, proto, event, name, type, domain)
        }, me) != nil else {
            throw MulticastError.cannotBrowse(ServiceDiscovery.errorText(avahi_client_errno(client)))
        }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let failure { throw failure }
            if let until, sessions.contains(where: until) { break }
            _ = avahi_simple_poll_iterate(poll, 100)
        }
        return sessions.sorted { $0.name < $1.name }
    }

    private func found(_ browser: OpaquePointer?, _ interface: AvahiIfIndex, _ proto: AvahiProtocol, _ event: AvahiBrowserEvent,
                       _ name: UnsafePointer<CChar>?, _ type: UnsafePointer<CChar>?, _ domain: UnsafePointer<CChar>?) {
        switch event {
        case AVAHI_BROWSER_NEW:
            let me = Unmanaged.passUnretained(self).toOpaque()
            pending += 1
            _ = avahi_service_resolver_new(client, interface, proto, name, type, domain, AvahiProtocol(AVAHI_PROTO_INET), AvahiLookupFlags(0), {
                resolver, _, _, event, name, _, _, host, address, port, txt, _, me in
                defer { avahi_service_resolver_free(resolver) }
                guard let me else { return }
                let browser = Unmanaged<ServiceBrowser>.fromOpaque(me).takeUnretainedValue()
                browser.pending -= 1
                guard event == AVAHI_RESOLVER_FOUND, let name, let host, let address else { return }
                var text = [CChar](repeating: 0, count: Int(AVAHI_ADDRESS_STR_MAX))
                avahi_address_snprint(&text, text.count, address)
                var session = ServiceDiscovery.Session(
                    name: String(cString: name), host: String(cString: host),
                    address: String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self), port: port)
                var entries: [String] = []
                var item = txt
                while let current = item {
                    let size = Int(avahi_string_list_get_size(current))
                    if let bytes = avahi_string_list_get_text(current) {
                        entries.append(String(decoding: UnsafeBufferPointer(start: bytes, count: size), as: UTF8.self))
                    }
                    item = avahi_string_list_get_next(current)
                }
                session.apply(txt: entries)
                if !browser.sessions.contains(where: { $0.name == session.name }) { browser.sessions.append(session) }
            }, me)
        case AVAHI_BROWSER_FAILURE:
            failure = .browsingFailed(ServiceDiscovery.errorText(avahi_client_errno(client)))
        default:
            break
        }
    }
}
