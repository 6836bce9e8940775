import Capture
import Configuration
import Foundation
@testable import NodeAgent
import Testing

/// The installer against scratch CNI directories: chaining, conversion, repair and removal.
@Suite struct CNIInstallerTests {
    final class Directories {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-install-\(UUID().uuidString)").path
        var bin: String { "\(root)/bin" }
        var conf: String { "\(root)/net.d" }
        var source: String { "\(root)/capstan" }

        init() throws {
            for path in [bin, conf] { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) }
            try Data("#!/bin/sh\n".utf8).write(to: URL(fileURLWithPath: source))
        }

        deinit { try? FileManager.default.removeItem(atPath: root) }

        func installer(chained: Bool = true) -> CNIInstaller {
            CNIInstaller(binDirectory: bin, confDirectory: conf, primaryConfName: nil, chained: chained,
                         pluginSettings: ["agent_socket": .string("/run/capstan/cni.sock")], sourceBinary: source)
        }

        func write(_ name: String, _ text: String) throws {
            try text.write(toFile: "\(conf)/\(name)", atomically: true, encoding: .utf8)
        }

        func read(_ name: String) throws -> ConfigValue {
            try ConfigValue.parse(json: String(contentsOfFile: "\(conf)/\(name)", encoding: .utf8))
        }
    }

    static let calico = #"{"cniVersion":"1.0.0","name":"k8s-pod-network","plugins":[{"type":"calico","mtu":1450},{"type":"portmap","capabilities":{"portMappings":true}}]}"#

    func pluginTypes(_ list: ConfigValue) -> [String] {
        guard case .array(let plugins)? = list["plugins"] else { return [] }
        return plugins.compactMap { $0["type"]?.stringValue }
    }

    @Test func chainsAfterThePrimaryPluginsAndIsIdempotent() throws {
        let dirs = try Directories()
        try dirs.write("10-calico.conflist", Self.calico)
        try dirs.write("99-other.conflist", Self.calico)
        let changes = try dirs.installer().install()
        #expect(changes.count == 2)
        let list = try dirs.read("10-calico.conflist")
        #expect(pluginTypes(list) == ["calico", "portmap", "capstan-cni"])
        #expect(list["name"] == .string("k8s-pod-network"))
        #expect(pluginTypes(try dirs.read("99-other.conflist")) == ["calico", "portmap"])
        #expect(FileManager.default.isExecutableFile(atPath: "\(dirs.bin)/capstan-cni"))
        #expect(try dirs.installer().install().isEmpty)
    }

    @Test func repairsWhatWasRemoved() throws {
        let dirs = try Directories()
        try dirs.write("10-calico.conflist", Self.calico)
        _ = try dirs.installer().install()
        try FileManager.default.removeItem(atPath: "\(dirs.bin)/capstan-cni")
        try dirs.write("10-calico.conflist", Self.calico)
        #expect(try dirs.installer().install().count == 2)
        #expect(pluginTypes(try dirs.read("10-calico.conflist")) == ["calico", "portmap", "capstan-cni"])
    }

    @Test func aSinglePluginConfBecomesAList() throws {
        let dirs = try Directories()
        try dirs.write("10-flannel.conf", #"{"cniVersion":"0.4.0","name":"cbr0","type":"flannel","delegate":{"isDefaultGateway":true}}"#)
        _ = try dirs.installer().install()
        #expect(!FileManager.default.fileExists(atPath: "\(dirs.conf)/10-flannel.conf"))
        let list = try dirs.read("10-flannel.conflist")
        #expect(list["cniVersion"] == .string("0.4.0"))
        #expect(pluginTypes(list) == ["flannel", "capstan-cni"])
    }

    @Test func waitsForAPrimaryConfigurationOrWritesItsOwn() throws {
        let dirs = try Directories()
        #expect(throws: CNIInstaller.InstallError.self) { try dirs.installer().install() }
        _ = try dirs.installer(chained: false).install()
        #expect(pluginTypes(try dirs.read("YY-capstan-cni.conflist")) == ["capstan-cni"])
    }

    @Test func uninstallTakesOnlyItselfOut() throws {
        let dirs = try Directories()
        try dirs.write("10-calico.conflist", Self.calico)
        _ = try dirs.installer().install()
        _ = try dirs.installer().uninstall()
        #expect(try dirs.read("10-calico.conflist") == ConfigValue.parse(json: Self.calico))
        #expect(!FileManager.default.fileExists(atPath: "\(dirs.bin)/capstan-cni"))
    }

    @Test func refusesAPrimaryThatIsNotJSON() throws {
        let dirs = try Directories()
        try dirs.write("10-broken.conflist", "{plugins: [")
        #expect { try dirs.installer().install() } throws: { "\($0)".contains("10-broken.conflist") }
        #expect(try String(contentsOfFile: "\(dirs.conf)/10-broken.conflist", encoding: .utf8) == "{plugins: [")
    }

    @Test func stateFileRoundTripsAndIsPrivate() throws {
        let dirs = try Directories()
        let store = ManagedPodStore(path: "\(dirs.root)/state.json")
        #expect(try store.load().isEmpty)
        let pod = PodAttachment(containerID: "c1", netns: "/run/netns/x", interfaceName: "eth0", podName: "cart",
                                podNamespace: "shop", addresses: ["10.1.0.7"])
        let record = ManagedPodRecord(pod: pod, spec: try .init(options: [.interceptionMode: "TPROXY"]))
        let other = ManagedPodRecord(pod: PodAttachment(containerID: "c2", netns: "/proc/42/ns/net", interfaceName: "eth0",
                                                        podName: "web", podNamespace: "shop", addresses: []), spec: CaptureSpec())
        try store.save(lines: [try ManagedPodStore.line(for: record), try ManagedPodStore.line(for: other)])
        #expect(try store.load() == [record, other])
        #expect(try store.load().first?.captureSpec().interceptionMode == .tproxy)
        let mode = try FileManager.default.attributesOfItem(atPath: store.path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        try "{not a record}\n".write(toFile: store.path, atomically: true, encoding: .utf8)
        #expect { try store.load() } throws: { "\($0)".contains("line 1") }
    }
}
