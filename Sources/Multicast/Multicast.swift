// Multicast: one image to many machines at once over UDP multicast.
//
// This module owns the server configuration plist, the wire protocol (docs/PROTOCOL.md), the
// pass scheduler and receiver bookkeeping (plain state machines, no I/O), and the thin socket
// adapters that run them: `MulticastServer` and `MulticastClient`.

import SystemSupport

/// A multicast failure: one line a user can act on.
public struct MulticastError: UserFacingError {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
