import Foundation

/// The folder tree `create --srcfolder` tests build filesystems from.
public enum SampleTree {
    /// Nested dirs, symlinks (relative, absolute, dangling), a large file with zero runs, and
    /// names with spaces, Unicode, quotes, a leading dash and 200 characters.
    public static func make(at root: String, fatSafe: Bool) throws {
        try Run.shell("""
            mkdir -p '\(root)/a/b/c/d' '\(root)/empty dir' '\(root)/ünïcødé folder/日本語'
            printf 'hello\\n' > '\(root)/a/b/c/d/deep.txt'
            printf 'spaces\\n' > '\(root)/a/name with spaces.txt'
            printf 'quote\\n' > "\(root)/a/it's a quote"
            printf 'dash\\n' > '\(root)/a/-leading-dash'
            printf 'unicode\\n' > '\(root)/ünïcødé folder/日本語/ファイル.txt'
            printf 'long\\n' > '\(root)/a/'"$(printf 'L%.0s' $(seq 1 200))"
            : > '\(root)/a/empty-file'
            { head -c 5M /dev/urandom; head -c 3M /dev/zero; seq 1 2000000; } > '\(root)/a/b/large.bin'
            chmod 0750 '\(root)/a/b'
            """)
        if !fatSafe {
            try Run.shell("""
                printf 'quotes\\n' > "\(root)/a/\\"double\\" quotes?.txt"
                ln -s c/d/deep.txt '\(root)/a/b/rel-link'
                ln -s /etc/hostname '\(root)/a/abs-link'
                ln -s does-not-exist '\(root)/a/dangling'
                ln -s ../b '\(root)/a/b/c/dir-link'
                """)
        }
    }
}
