import HTTPTypes
import NIOHTTP1

/// Envoy's limits on request headers (`max_request_headers_kb`, `max_headers_count`): a request over
/// either is answered 431 before it goes anywhere.
struct RequestLimits: Sendable {
    var maxHeaderBytes: Int
    var maxHeaderCount: Int

    struct Refusal {
        var status: HTTPResponseStatus
        var body: String
    }

    func refusal(for headers: HTTPHeaders) -> Refusal? {
        var bytes = 0
        for header in headers { bytes += header.name.utf8.count + header.value.utf8.count }
        return refusal(count: headers.count, bytes: bytes)
    }

    func refusal(for fields: HTTPFields) -> Refusal? {
        var bytes = 0
        for field in fields { bytes += field.name.rawName.utf8.count + field.value.utf8.count }
        return refusal(count: fields.count, bytes: bytes)
    }

    private func refusal(count: Int, bytes: Int) -> Refusal? {
        if count > maxHeaderCount {
            return Refusal(status: .requestHeaderFieldsTooLarge, body: "too many headers: \(count) (limit \(maxHeaderCount))")
        }
        if bytes > maxHeaderBytes {
            return Refusal(status: .requestHeaderFieldsTooLarge, body: "request headers too large: \(bytes) bytes (limit \(maxHeaderBytes))")
        }
        return nil
    }
}
