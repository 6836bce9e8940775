import Configuration
import SwiftProtobuf
import XDS

/// One `access_log` entry Capstan writes: Envoy's `envoy.access_loggers.file` (a path), `stdout` or
/// `stderr` (`/dev/stdout`, `/dev/stderr`), with its format compiled once.
public struct AccessLogConfig: Sendable, Equatable {
    /// `name`, as configured (`envoy.access_loggers.file`).
    public var name: String
    /// Where the lines go; one writer per distinct path, shared by every listener that names it.
    public var path: String
    public var format: AccessLogFormat

    public init(name: String, path: String, format: AccessLogFormat) {
        self.name = name
        self.path = path
        self.format = format
    }

    static let fileType = "envoy.extensions.access_loggers.file.v3.FileAccessLog"
    static let stdoutType = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
    static let stderrType = "envoy.extensions.access_loggers.stream.v3.StderrAccessLog"

    /// Decodes `access_log` entries. `path` names the list's holder in refusals
    /// (`listener "x".filter_chains[0].filters[0].typed_config`); not-acted-on paths are relative to it
    /// (`access_log[1]`). Loggers other than file, stdout and stderr, and `filter`, are listed as not acted
    /// on; an invalid format is refused.
    public static func decode(_ logs: [Envoy_Config_Accesslog_V3_AccessLog], path: String,
                              notActedOn: inout [FieldNotActedOn]) throws(ConfigError) -> [AccessLogConfig] {
        var decoded: [AccessLogConfig] = []
        for (index, log) in logs.enumerated() {
            let field = "access_log[\(index)]"
            let logPath = "\(path).\(field)"
            guard log.configType != nil else {
                notActedOn.append(.init(path: field, reason: "\"\(log.name)\" has no typed_config: nothing is written"))
                continue
            }
            let typeName = HTTPFilterRegistry.typeName(log.typedConfig.typeURL)
            let configPath = "\(logPath).typed_config"
            let logFile: String
            let format: Envoy_Config_Core_V3_SubstitutionFormatString?
            var formatPath = "\(configPath).log_format"
            var legacy: AccessLogFormat?
            switch typeName {
            case fileType:
                let config: Envoy_Extensions_AccessLoggers_File_V3_FileAccessLog = try unpack(log.typedConfig, path: configPath)
                guard !config.path.isEmpty else {
                    throw ConfigError(path: "\(configPath).path", message: "is required: the file access log's lines go there")
                }
                logFile = config.path
                switch config.accessLogFormat {
                case .logFormat(let given)?: format = given
                case .format(let text)?:
                    format = nil
                    formatPath = "\(configPath).format"
                    legacy = try compile(path: formatPath) { () throws(AccessLogFormat.Error) in try AccessLogFormat(text: text) }
                case .typedJsonFormat(let json)?:
                    format = nil
                    formatPath = "\(configPath).typed_json_format"
                    legacy = try compile(path: formatPath) { () throws(AccessLogFormat.Error) in try AccessLogFormat(json: json) }
                case .jsonFormat?:
                    throw ConfigError(path: "\(configPath).json_format",
                                      message: "the deprecated untyped json_format is not supported: use log_format.json_format")
                case nil: format = nil
                }
            case stdoutType:
                let config: Envoy_Extensions_AccessLoggers_Stream_V3_StdoutAccessLog = try unpack(log.typedConfig, path: configPath)
                logFile = "/dev/stdout"
                if case .logFormat(let given)? = config.accessLogFormat { format = given } else { format = nil }
            case stderrType:
                let config: Envoy_Extensions_AccessLoggers_Stream_V3_StderrAccessLog = try unpack(log.typedConfig, path: configPath)
                logFile = "/dev/stderr"
                if case .logFormat(let given)? = config.accessLogFormat { format = given } else { format = nil }
            default:
                notActedOn.append(.init(path: field, reason: "Capstan writes file, stdout and stderr access logs only: \"\(log.name)\" (\(typeName)) writes nothing"))
                continue
            }
            let compiled: AccessLogFormat
            if let legacy {
                compiled = legacy
            } else if let format {
                compiled = try Self.format(format, path: formatPath, field: "\(field).typed_config.log_format", notActedOn: &notActedOn)
            } else {
                compiled = .envoyDefault
            }
            if log.hasFilter {
                notActedOn.append(.init(path: "\(field).filter", reason: "access log filters are not applied: every request is logged"))
            }
            let unlogged = compiled.operatorsWithoutData
            if !unlogged.isEmpty {
                notActedOn.append(.init(path: "\(field).typed_config", reason: "Capstan does not record "
                    + unlogged.map { "%\($0)%" }.joined(separator: ", ") + ": printed as - (null in JSON)"))
            }
            decoded.append(AccessLogConfig(name: log.name, path: logFile, format: compiled))
        }
        return decoded
    }

    /// A `SubstitutionFormatString`: text (inline or from an inline data source) or JSON.
    static func format(_ given: Envoy_Config_Core_V3_SubstitutionFormatString, path: String, field: String,
                       notActedOn: inout [FieldNotActedOn]) throws(ConfigError) -> AccessLogFormat {
        guard given.formatters.isEmpty else {
            throw ConfigError(path: "\(path).formatters[0]", message: "custom command parsers (\"\(given.formatters[0].name)\") are not supported")
        }
        if !given.contentType.isEmpty {
            notActedOn.append(.init(path: "\(field).content_type", reason: "a content type matters to local replies, not to access logs"))
        }
        notActedOn += UnknownFields.paths(in: given).map { FieldNotActedOn(path: "\(field).\($0)", reason: UnknownFields.reason) }
        let omit = given.omitEmptyValues
        switch given.format {
        case .textFormat(let text)?:
            return try compile(path: "\(path).text_format") { () throws(AccessLogFormat.Error) in try AccessLogFormat(text: text, omitsEmptyValues: omit) }
        case .jsonFormat(let json)?:
            return try compile(path: "\(path).json_format") { () throws(AccessLogFormat.Error) in try AccessLogFormat(json: json, omitsEmptyValues: omit) }
        case .textFormatSource(let source)?:
            let text: String
            switch source.specifier {
            case .inlineString(let string)?: text = string
            case .inlineBytes(let bytes)?: text = String(decoding: bytes, as: UTF8.self)
            default:
                throw ConfigError(path: "\(path).text_format_source", message: "only inline_string and inline_bytes are supported")
            }
            return try compile(path: "\(path).text_format_source") { () throws(AccessLogFormat.Error) in try AccessLogFormat(text: text, omitsEmptyValues: omit) }
        case nil:
            return AccessLogFormat(body: AccessLogFormat.envoyDefault.body, omitsEmptyValues: omit)
        }
    }

    private static func compile(path: String, _ body: () throws(AccessLogFormat.Error) -> AccessLogFormat) throws(ConfigError) -> AccessLogFormat {
        do {
            return try body()
        } catch {
            throw ConfigError(path: path, message: error.message)
        }
    }

    private static func unpack<M: SwiftProtobuf.Message>(_ any: Google_Protobuf_Any, path: String) throws(ConfigError) -> M {
        do {
            return try M(unpackingAny: any)
        } catch {
            throw ConfigError(path: path, message: "is not a \(M.protoMessageName): \(error)")
        }
    }
}
