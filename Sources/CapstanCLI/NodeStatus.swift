import ArgumentParser
import FoundationEssentials
import NodeAgent

/// `capstan status --node`: the node agent's managed pods, as the agent reports them.
struct NodeStatus {
    let socket: String
    let format: StatusCommand.Format

    func show() throws {
        let reply: AgentReply
        do {
            reply = try NodeAgentClient(socketPath: socket, timeout: .seconds(5)).send(AgentRequest(.list))
        } catch {
            printError("capstan status: error: \(error)")
            throw ExitCode(1)
        }
        let pods = reply.pods ?? []
        switch format {
        case .json:
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            writeLine(String(decoding: try encoder.encode(pods), as: UTF8.self))
        case .text:
            writeLine("node agent \(socket): \(pods.count) managed pod\(pods.count == 1 ? "" : "s")")
            let rows = [["POD", "MODE", "HEALTH", "REPAIRS", "CHECKED", "ADDRESSES", "NETNS"]] + pods.map { status in
                [status.pod.podKey, status.mode, status.health, String(status.repairs),
                 status.lastChecked.map { "\(Int($0))s ago" } ?? "-", status.pod.addresses.joined(separator: ","), status.pod.netns]
            }
            let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max() ?? 0 }
            for row in rows {
                let line = zip(row, widths).map { $0 + String(repeating: " ", count: $1 - $0.count) }.joined(separator: "  ")
                writeLine(String(line.reversed().drop(while: { $0 == " " }).reversed()))
            }
        }
        if pods.contains(where: { $0.health != "intact" }) { throw ExitCode(1) }
    }
}
