extension Sys {
    /// Writes `text` and a newline to standard error at once (unbuffered, so a message printed just
    /// before the process exits is not lost). Errors are ignored: there is nowhere left to report them.
    public static func printError(_ text: String) {
        try? FileIO.writeAll(fd: 2, Array((text + "\n").utf8))
    }
}
