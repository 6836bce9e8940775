import Configuration
import SwiftProtobuf
import Testing
import XDS
@testable import HTTPProxy

/// A connection manager's `access_log` decoded: the loggers Capstan writes, those it lists as not acted
/// on, and refusals by the field's path.
@Suite struct AccessLogConfigTests {
    typealias HCM = Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager

    static func manager(accessLog: String) throws -> HTTPConnectionManagerConfig {
        for type: any SwiftProtobuf.Message.Type in [Envoy_Extensions_Filters_Http_Router_V3_Router.self,
                                                     Envoy_Extensions_AccessLoggers_File_V3_FileAccessLog.self,
                                                     Envoy_Extensions_AccessLoggers_Stream_V3_StdoutAccessLog.self,
                                                     Envoy_Extensions_AccessLoggers_Stream_V3_StderrAccessLog.self] {
            Google_Protobuf_Any.register(messageType: type)
        }
        let json = """
            {"stat_prefix": "test", "route_config": {"name": "test"}, "access_log": \(accessLog),
             "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
            """
        var options = JSONDecodingOptions()
        options.ignoreUnknownFields = true  // the access log filter's contents, outside the subset
        return try HTTPConnectionManagerConfig(try HCM(jsonString: json, options: options), path: "hcm")
    }

    static let file = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"

    @Test func fileStdoutAndStderrAreWrittenOthersListed() throws {
        let config = try Self.manager(accessLog: """
            [{"name": "envoy.access_loggers.file", "typed_config": {"@type": "\(Self.file)", "path": "/tmp/a.log",
               "log_format": {"text_format_source": {"inline_string": "%PROTOCOL%\\n"}}}},
             {"name": "envoy.access_loggers.stdout", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"},
               "filter": {"status_code_filter": {"comparison": {"op": "GE", "value": {"default_value": 400, "runtime_key": "x"}}}}},
             {"name": "envoy.access_loggers.stderr", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
               "log_format": {"json_format": {"code": "%RESPONSE_CODE%"}}}},
             {"name": "envoy.access_loggers.http_grpc", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig"}},
             {"name": "envoy.access_loggers.file", "typed_config": {"@type": "\(Self.file)", "path": "/tmp/b.log",
               "log_format": {"text_format": "%CONNECTION_ID% %FILTER_STATE(x)%"}}}]
            """)
        #expect(config.recordsForAccessLog)
        #expect(config.accessLogs.map(\.path) == ["/tmp/a.log", "/dev/stdout", "/dev/stderr", "/tmp/b.log"])
        #expect(config.accessLogs[0].format == (try AccessLogFormat(text: "%PROTOCOL%\n")))
        #expect(config.accessLogs[1].format == AccessLogFormat.envoyDefault, "Envoy's default format without log_format")
        #expect(config.accessLogs[2].format == (try AccessLogFormat(json: try Google_Protobuf_Struct(jsonString: #"{"code": "%RESPONSE_CODE%"}"#))))
        let listed = config.fieldsNotActedOn.map(\.path)
        #expect(listed == ["access_log[1].filter", "access_log[3]", "access_log[4].typed_config"])
        #expect(config.fieldsNotActedOn.last?.reason == "Capstan does not record %CONNECTION_ID%, %FILTER_STATE(x)%: printed as - (null in JSON)")
    }

    @Test func withoutAccessLogsNothingIsRecorded() throws {
        let config = try Self.manager(accessLog: "[]")
        #expect(!config.recordsForAccessLog)
        #expect(config.accessLogs.isEmpty)
    }

    @Test(arguments: [
        (#"[{"name": "f", "typed_config": {"@type": "\#(file)", "path": "/tmp/x", "log_format": {"text_format": "%BAD%"}}}]"#,
         "hcm.access_log[0].typed_config.log_format.text_format: position 0: %BAD% is not a command operator Capstan knows"),
        (#"[{"name": "f", "typed_config": {"@type": "\#(file)", "log_format": {"text_format": "x"}}}]"#,
         "hcm.access_log[0].typed_config.path: is required: the file access log's lines go there"),
        (#"[{"name": "f", "typed_config": {"@type": "\#(file)", "path": "/tmp/x", "json_format": {"a": "b"}}}]"#,
         "hcm.access_log[0].typed_config.json_format: the deprecated untyped json_format is not supported: use log_format.json_format"),
        (#"[{"name": "f", "typed_config": {"@type": "\#(file)", "path": "/tmp/x", "format": "%REQ(A"}}]"#,
         "hcm.access_log[0].typed_config.format: position 0: %REQ( has no closing )"),
        (#"[{"name": "f", "typed_config": {"@type": "\#(file)", "path": "/tmp/x", "log_format": {"json_format": {"k": "%X"}}}}]"#,
         "hcm.access_log[0].typed_config.log_format.json_format: k: position 0: %X is not closed by %"),
        (#"[{"name": "f", "typed_config": {"@type": "\#(file)", "path": "/tmp/x", "log_format": {"text_format_source": {"filename": "/etc/f"}}}}]"#,
         "hcm.access_log[0].typed_config.log_format.text_format_source: only inline_string and inline_bytes are supported"),
        (#"[{"name": "f", "typed_config": {"@type": "\#(file)", "path": "/tmp/x", "log_format": {"text_format": "x", "formatters": [{"name": "envoy.formatter.req_without_query"}]}}}]"#,
         "hcm.access_log[0].typed_config.log_format.formatters[0]: custom command parsers (\"envoy.formatter.req_without_query\") are not supported"),
    ])
    func invalidAccessLogsAreRefusedByPath(accessLog: String, message: String) {
        #expect(throws: ConfigError.self) { try Self.manager(accessLog: accessLog) }
        do {
            _ = try Self.manager(accessLog: accessLog)
        } catch let error as ConfigError {
            #expect("\(error.path): \(error.message)" == message)
        } catch {
            Issue.record("not a ConfigError: \(error)")
        }
    }
}
