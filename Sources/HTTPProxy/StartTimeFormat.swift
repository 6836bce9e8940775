#if canImport(Glibc)
import Glibc
#endif

/// `%START_TIME(...)%`'s format, compiled once: strftime's common specifiers, and Envoy's own `%f`
/// (fractional seconds, `%3f` for milliseconds), `%EnS` (seconds with n fractional digits) and `%s`
/// (seconds since the epoch). Formatted in UTC with `gmtime_r`, without Foundation. Envoy's default,
/// with no argument, is RFC 3339 with milliseconds: `2026-12-02T12:38:56.123Z`.
public struct StartTimeFormat: Sendable, Equatable {
    enum Piece: Sendable, Equatable {
        case literal([UInt8])
        case year, yearOfCentury, month, day, dayOfYear, hour, minute, second
        /// Fractional seconds with this many digits (1-9).
        case fraction(Int)
        case epochSeconds
        case monthName, weekdayName
        /// `%z` (`+0000`) and `%Z` (`UTC`): times are always UTC.
        case zoneOffset, zoneName
    }

    var pieces: [Piece]

    /// Envoy's default: `%Y-%m-%dT%H:%M:%E3SZ`.
    public static let rfc3339Milliseconds = StartTimeFormat(pieces: [
        .year, .literal(Array("-".utf8)), .month, .literal(Array("-".utf8)), .day, .literal(Array("T".utf8)), .hour,
        .literal(Array(":".utf8)), .minute, .literal(Array(":".utf8)), .second, .literal(Array(".".utf8)), .fraction(3),
        .literal(Array("Z".utf8)),
    ])

    init(pieces: [Piece]) { self.pieces = pieces }

    /// Compiles `format` (nil or empty: Envoy's default). Refused: a specifier outside the supported set.
    init(_ format: String?, where location: String) throws(AccessLogFormat.Error) {
        guard let format, !format.isEmpty else {
            self = .rfc3339Milliseconds
            return
        }
        var pieces: [Piece] = []
        var literal: [UInt8] = []
        func add(_ piece: Piece) {
            if !literal.isEmpty { pieces.append(.literal(literal)); literal = [] }
            pieces.append(piece)
        }
        let bytes = Array(format.utf8)
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            guard byte == UInt8(ascii: "%") else {
                literal.append(byte)
                index += 1
                continue
            }
            guard index + 1 < bytes.count else {
                throw .init("\(location): START_TIME(\(format)) ends in a lone %")
            }
            var next = bytes[index + 1]
            var digits: Int?
            // %3f, %E3S: a digit count first.
            var specifierStart = index + 1
            if next == UInt8(ascii: "E"), index + 3 < bytes.count, (UInt8(ascii: "1")...UInt8(ascii: "9")).contains(bytes[index + 2]),
               bytes[index + 3] == UInt8(ascii: "S") {
                add(.second)
                add(.literal(Array(".".utf8)))
                add(.fraction(Int(bytes[index + 2] - UInt8(ascii: "0"))))
                index += 4
                continue
            }
            if (UInt8(ascii: "1")...UInt8(ascii: "9")).contains(next), index + 2 < bytes.count {
                digits = Int(next - UInt8(ascii: "0"))
                specifierStart = index + 2
                next = bytes[specifierStart]
                guard next == UInt8(ascii: "f") else {
                    throw .init("\(location): START_TIME(\(format)): a digit count goes only before f (%3f)")
                }
            }
            switch next {
            case UInt8(ascii: "Y"): add(.year)
            case UInt8(ascii: "y"): add(.yearOfCentury)
            case UInt8(ascii: "m"): add(.month)
            case UInt8(ascii: "d"): add(.day)
            case UInt8(ascii: "j"): add(.dayOfYear)
            case UInt8(ascii: "H"): add(.hour)
            case UInt8(ascii: "M"): add(.minute)
            case UInt8(ascii: "S"): add(.second)
            case UInt8(ascii: "f"): add(.fraction(digits ?? 9))
            case UInt8(ascii: "s"): add(.epochSeconds)
            case UInt8(ascii: "b"): add(.monthName)
            case UInt8(ascii: "a"): add(.weekdayName)
            case UInt8(ascii: "z"): add(.zoneOffset)
            case UInt8(ascii: "Z"): add(.zoneName)
            case UInt8(ascii: "F"):
                add(.year); add(.literal(Array("-".utf8))); add(.month); add(.literal(Array("-".utf8))); add(.day)
            case UInt8(ascii: "T"):
                add(.hour); add(.literal(Array(":".utf8))); add(.minute); add(.literal(Array(":".utf8))); add(.second)
            case UInt8(ascii: "%"): literal.append(UInt8(ascii: "%"))
            default:
                throw .init("\(location): START_TIME(\(format)): %\(Character(Unicode.Scalar(next))) is not a supported specifier (Capstan has %Y %y %m %d %j %H %M %S %f %Nf %ENS %s %b %a %z %Z %F %T %%)")
            }
            index = specifierStart + 1
        }
        if !literal.isEmpty { pieces.append(.literal(literal)) }
        self.pieces = pieces
    }

    private static let monthNames = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    private static let weekdayNames = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]

    /// Appends the time `seconds`.`nanoseconds` since the epoch, in UTC.
    public func render(seconds: Int, nanoseconds: Int, into output: inout [UInt8]) {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        for piece in pieces {
            switch piece {
            case .literal(let bytes): output.append(contentsOf: bytes)
            case .year: Self.append(Int(parts.tm_year) + 1900, width: 4, into: &output)
            case .yearOfCentury: Self.append(Int(parts.tm_year) % 100, width: 2, into: &output)
            case .month: Self.append(Int(parts.tm_mon) + 1, width: 2, into: &output)
            case .day: Self.append(Int(parts.tm_mday), width: 2, into: &output)
            case .dayOfYear: Self.append(Int(parts.tm_yday) + 1, width: 3, into: &output)
            case .hour: Self.append(Int(parts.tm_hour), width: 2, into: &output)
            case .minute: Self.append(Int(parts.tm_min), width: 2, into: &output)
            case .second: Self.append(Int(parts.tm_sec), width: 2, into: &output)
            case .fraction(let digits):
                var value = nanoseconds
                for _ in digits..<9 { value /= 10 }
                Self.append(value, width: digits, into: &output)
            case .epochSeconds: Self.append(seconds, width: 1, into: &output)
            case .monthName: output.append(contentsOf: Self.monthNames[Int(parts.tm_mon)].utf8)
            case .weekdayName: output.append(contentsOf: Self.weekdayNames[Int(parts.tm_wday)].utf8)
            case .zoneOffset: output.append(contentsOf: "+0000".utf8)
            case .zoneName: output.append(contentsOf: "UTC".utf8)
            }
        }
    }

    /// `value` in decimal, zero-padded to `width`.
    static func append(_ value: Int, width: Int, into output: inout [UInt8]) {
        var digits: [UInt8] = []
        var rest = value < 0 ? -value : value
        repeat {
            digits.append(UInt8(ascii: "0") + UInt8(rest % 10))
            rest /= 10
        } while rest > 0
        if value < 0 { output.append(UInt8(ascii: "-")) }
        if digits.count < width { output.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: width - digits.count)) }
        output.append(contentsOf: digits.reversed())
    }
}
