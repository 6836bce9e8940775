import Netfilter

/// The nameservers of a resolv.conf, which `--redirect-dns` captures.
public enum ResolvConf {
    public static let defaultPath = "/etc/resolv.conf"

    /// `nameserver ADDR` lines; a link-local zone (`%eth0`) is dropped, lines that are not addresses are skipped.
    public static func nameservers(in text: String) -> [IPAddress] {
        text.split(separator: "\n").compactMap { line in
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 2, fields[0] == "nameserver" else { return nil }
            return IPAddress(fields[1].split(separator: "%")[0])
        }
    }
}
