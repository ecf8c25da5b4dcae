import SystemSupport
import Foundation

/// One resource of the XML resource fork (a `blkx` region, the `plst`, `nsiz`, ...).
public struct ResourceEntry: Sendable, Equatable, Decodable {
    public var attributes: String
    public var cfName: String?
    public var data: [UInt8]
    public var id: String
    public var name: String

    public init(attributes: String = "0x0050", cfName: String? = nil, data: [UInt8], id: String, name: String) {
        self.attributes = attributes
        self.cfName = cfName
        self.data = data
        self.id = id
        self.name = name
    }

    enum CodingKeys: String, CodingKey {
        case attributes = "Attributes", cfName = "CFName", data = "Data", id = "ID", name = "Name"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let s = try? c.decode(String.self, forKey: .attributes) {
            attributes = s
        } else {
            attributes = String(try c.decodeIfPresent(Int.self, forKey: .attributes) ?? 0x50)
        }
        cfName = try c.decodeIfPresent(String.self, forKey: .cfName)
        data = [UInt8](try c.decodeIfPresent(Data.self, forKey: .data) ?? Data())
        if let s = try? c.decode(String.self, forKey: .id) {
            id = s
        } else {
            id = String(try c.decodeIfPresent(Int.self, forKey: .id) ?? 0)
        }
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? cfName ?? ""
    }
}

/// The XML property list at the end of a UDIF image: resources by type, in key order.
public struct ResourceFork: Sendable, Equatable {
    public var resources: [String: [ResourceEntry]]

    public init(resources: [String: [ResourceEntry]] = [:]) { self.resources = resources }

    public var blkx: [ResourceEntry] { resources["blkx"] ?? [] }

    private struct Root: Decodable {
        let resourceFork: [String: [ResourceEntry]]
        enum CodingKeys: String, CodingKey { case resourceFork = "resource-fork" }
    }

    public init(parsing xml: [UInt8]) throws {
        do { try PropertyListSafety.check(xml) } catch { throw UDIFError.badResourceFork(error.reason) }
        let root: Root
        do {
            root = try PropertyListDecoder().decode(Root.self, from: Data(xml))
        } catch {
            throw UDIFError.badResourceFork("is malformed: \(Self.shortReason(error))")
        }
        resources = root.resourceFork
    }

    private static func shortReason(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): "missing key \(key.stringValue)"
        case DecodingError.typeMismatch(_, let ctx), DecodingError.valueNotFound(_, let ctx):
            // The path's keys come from the file.
            "wrong type at " + displayable(ctx.codingPath.map(\.stringValue).joined(separator: "."))
        case DecodingError.dataCorrupted: "not a property list"
        default: "not a property list"
        }
    }

    /// hdiutil's layout: tab indentation and base64 in 44-character lines, which strict
    /// text-scanning readers such as dmg2img depend on.
    public func xml() -> [UInt8] {
        var out = """
        <?xml version="1.0" encoding="UTF-8"?>
        <!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
        <plist version="1.0">
        <dict>
        \t<key>resource-fork</key>
        \t<dict>

        """
        for key in resources.keys.sorted() {
            out += "\t\t<key>\(Self.escape(key))</key>\n\t\t<array>\n"
            for e in resources[key] ?? [] {
                out += "\t\t\t<dict>\n"
                out += "\t\t\t\t<key>Attributes</key>\n\t\t\t\t<string>\(Self.escape(e.attributes))</string>\n"
                if let cf = e.cfName {
                    out += "\t\t\t\t<key>CFName</key>\n\t\t\t\t<string>\(Self.escape(cf))</string>\n"
                }
                out += "\t\t\t\t<key>Data</key>\n\t\t\t\t<data>\n"
                let b64 = Array(Data(e.data).base64EncodedString().utf8)
                var i = 0
                while i < b64.count {
                    let end = min(i + 44, b64.count)
                    out += "\t\t\t\t" + String(decoding: b64[i..<end], as: UTF8.self) + "\n"
                    i = end
                }
                out += "\t\t\t\t</data>\n"
                out += "\t\t\t\t<key>ID</key>\n\t\t\t\t<string>\(Self.escape(e.id))</string>\n"
                out += "\t\t\t\t<key>Name</key>\n\t\t\t\t<string>\(Self.escape(e.name))</string>\n"
                out += "\t\t\t</dict>\n"
            }
            out += "\t\t</array>\n"
        }
        out += "\t</dict>\n</dict>\n</plist>\n"
        return Array(out.utf8)
    }

    static func escape(_ s: String) -> String {
        var r = ""
        for ch in s {
            switch ch {
            case "&": r += "&amp;"
            case "<": r += "&lt;"
            case ">": r += "&gt;"
            default: r.append(ch)
            }
        }
        return r
    }

    /// hdiutil's `plst` resource: 1032 bytes, zero but for two flag bytes.
    public static func defaultPlst() -> ResourceEntry {
        var data = [UInt8](repeating: 0, count: 1032)
        data[517] = 1
        data[519] = 1
        return ResourceEntry(data: data, id: "0", name: "")
    }
}
