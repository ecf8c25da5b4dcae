// CommandSupport: what the command line does before ArgumentParser sees it.
//
// This module owns the translation of Apple's asr(8) spellings into this program's verbs and
// double-dash options, so scripts written for macOS keep working. It is plain string work,
// with no dependency, tested in-process.

/// Apple's single-dash spellings (`asr -source A -target B -erase`, `asr -imagescan IMG`),
/// turned into the verbs and options this program parses.
package enum LegacySyntax {
    package static let verbs: Set = ["create", "imagescan", "verify", "restore", "compare", "info", "convert", "version", "help", "server", "mount", "unmount", "list"]
    package static let renamed = ["nocheck": "noverify"]

    package static func modernize(_ args: [String]) -> [String] {
        var out = args.map { arg -> String in
            guard arg.count > 2, arg.hasPrefix("-"), !arg.hasPrefix("--"), arg.dropFirst().allSatisfy(\.isLetter) else { return arg }
            let name = String(arg.dropFirst())
            return "--" + (renamed[name] ?? name)
        }
        guard let first = out.first, !verbs.contains(first) else { return out }
        if let i = out.firstIndex(of: "--imagescan"), i + 1 < out.count {
            let image = out[i + 1]
            out.removeSubrange(i...(i + 1))
            return ["imagescan", "--source", image] + out
        }
        if let i = out.firstIndex(of: "--verify"), i + 1 < out.count, !out.contains("--target") {
            let image = out[i + 1]
            out.removeSubrange(i...(i + 1))
            return ["verify", "--source", image] + out
        }
        if let i = out.firstIndex(of: "--server"), i + 1 < out.count {
            let config = out[i + 1]
            out.removeSubrange(i...(i + 1))
            return ["server", "--config", config] + out
        }
        if out.contains("--source") && out.contains("--target") { return ["restore"] + out }
        return out
    }
}
