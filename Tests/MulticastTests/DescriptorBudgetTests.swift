import Multicast
import Testing

/// How the process's descriptors are shared between the control port and the status server.
@Suite struct DescriptorBudgetTests {
    @Test func bothGetWhatTheyAskWhenItFits() throws {
        #expect(try DescriptorBudget.share(limit: 2048, control: 1024, status: 256) == DescriptorBudget(limit: 2048, control: 1024, status: 256))
        #expect(try DescriptorBudget.share(limit: 1024 + 256 + DescriptorBudget.reserve, control: 1024, status: 256).control == 1024)
    }

    /// systemd's default soft limit with the default caps: both shrink, and together with the
    /// reserve they stay within the limit, so neither can take the other's descriptors.
    @Test func aLowLimitIsSharedNotOverrun() throws {
        for (limit, control, status) in [(1024, 1024, 256), (1024, 65536, 256), (300, 1024, 256), (100, 1024, 0), (70, 8, 256)] {
            let b = try DescriptorBudget.share(limit: limit, control: control, status: status)
            #expect(b.control + b.status + DescriptorBudget.reserve <= limit, "\(limit) \(control) \(status): \(b)")
            #expect(b.control >= 1 && b.control <= control && b.status <= status, "\(b)")
            #expect(status == 0 ? b.status == 0 : b.status >= 1, "\(b)")
        }
        let b = try DescriptorBudget.share(limit: 1024, control: 1024, status: 256)
        #expect(b == DescriptorBudget(limit: 1024, control: 720, status: 240))
    }

    @Test func tooFewIsOneLine() {
        #expect(throws: MulticastError.tooFewDescriptors(limit: 64, needed: 66)) {
            try DescriptorBudget.share(limit: 64, control: 1024, status: 256)
        }
        #expect(MulticastError.tooFewDescriptors(limit: 64, needed: 66).description
                == "the descriptor limit (64) leaves too few to serve: raise it to at least 66 (LimitNOFILE=, ulimit -n)")
    }
}
