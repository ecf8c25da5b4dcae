// TargetComparer: `asr compare`, which reads a target against an image's scan and writes nothing.

import Foundation

/// `asr compare`: reads a target against a scanned image's checksums and counts what differs.
/// Writes nothing.
public struct TargetComparer {
    public var reporter: Reporter
    /// The block map of a raw source, when it is not the source's sidecar.
    public var blockMapPath: String?

    public init(reporter: Reporter) { self.reporter = reporter }

    public func compare(source sourcePath: String, target targetPath: String) throws -> TargetComparison {
        let source = try ImageSource.open(sourcePath)
        var st = stat()
        guard stat(targetPath, &st) == 0 else { throw ImagingError.unusableTarget(path: targetPath, .missing) }
        guard [S_IFREG, S_IFBLK].contains(st.st_mode & S_IFMT) else { throw ImagingError.unusableTarget(path: targetPath, .notDiskOrFile) }
        guard let plan = try VerificationPlan(ifScanned: source, blockMap: blockMapPath) else {
            throw ImagingError.cannotCompare(path: sourcePath)
        }
        let held = try TargetSurvey(reporter: reporter).held(in: targetPath, ranges: plan.ranges)
        return TargetComparison(source: source, target: targetPath, plan: plan, held: held)
    }
}
