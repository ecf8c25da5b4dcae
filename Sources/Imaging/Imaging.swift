// Imaging: the workflows built on the UDIF format.
//
// This module owns sources and targets (UDIF images, raw image files, block devices, mounted
// filesystems resolved to their device, HTTP range requests), `create` (from a device, image
// or folder tree), `convert`, `info`, `imagescan`, `verify`, the unicast `restore` pipeline,
// block maps, size parsing and progress reporting. It prints only through the `Reporter` it
// is handed; the `asr` executable maps its errors to exit codes.

import UDIF

/// A failure a user caused or can fix: one readable line.
public struct ImagingError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
