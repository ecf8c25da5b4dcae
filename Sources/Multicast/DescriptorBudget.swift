import Glibc

/// The server process's descriptors, shared out so that neither listener can starve the
/// other: the control port's connections (`Max Connections`), the status server's, and a
/// reserve for the rest (the image, the data and listening sockets, the status server's event
/// loop, Avahi, standard streams, and connections accepted only to be closed past a cap).
/// Both counts together stay under RLIMIT_NOFILE, so a flood on one port can use up that
/// port's share and no more: the other still accepts.
public struct DescriptorBudget: Equatable, Sendable {
    /// Descriptors kept for everything but connections.
    public static let reserve = 64

    /// RLIMIT_NOFILE as the server runs with it.
    public var limit: Int
    /// Control connections open at most.
    public var control: Int
    /// Status connections open at most.
    public var status: Int

    public init(limit: Int, control: Int, status: Int) {
        self.limit = limit
        self.control = control
        self.status = status
    }

    /// Each side gets what it asks for when both fit in `limit`; otherwise the status server
    /// keeps at most a quarter of what is left after the reserve, and the control port the rest.
    public static func share(limit: Int, control: Int, status: Int) throws(MulticastError) -> DescriptorBudget {
        let available = limit - reserve
        if control + status <= available { return DescriptorBudget(limit: limit, control: control, status: status) }
        let statusShare = min(status, max(available / 4, status > 0 ? 1 : 0))
        let controlShare = min(control, available - statusShare)
        guard controlShare >= 1 else { throw .tooFewDescriptors(limit: limit, needed: reserve + 1 + (status > 0 ? 1 : 0)) }
        return DescriptorBudget(limit: limit, control: controlShare, status: statusShare)
    }

    /// Raises the soft RLIMIT_NOFILE to the hard one, then shares what there is. The line to
    /// log, when the limit made either side smaller than asked, says so and what to raise.
    public static func forServer(control: Int, status: Int) throws(MulticastError) -> (DescriptorBudget, note: String?) {
        var rl = rlimit()
        getrlimit(RLIMIT_NOFILE_, &rl)
        if rl.rlim_cur < rl.rlim_max {
            var raised = rl
            raised.rlim_cur = rl.rlim_max
            if setrlimit(RLIMIT_NOFILE_, &raised) == 0 { rl = raised }
        }
        // An unlimited or huge limit: more than any count we would ask for.
        let limit = Int(min(rl.rlim_cur, rlim_t(Int32.max)))
        let budget = try share(limit: limit, control: control, status: status)
        guard budget.control < control || budget.status < status else { return (budget, nil) }
        let needed = control + status + reserve
        return (budget, "the descriptor limit (\(limit)) is below the \(needed) that Max Connections (\(control)), the status "
                + "server (\(status)) and \(reserve) spare need: serving at most \(budget.control) control and \(budget.status) "
                + "status connections (raise LimitNOFILE= or ulimit -n)")
    }
}

/// Glibc's RLIMIT_NOFILE is an enum case on Linux, an Int32 elsewhere.
private let RLIMIT_NOFILE_ = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
