/// A CUSTOM AuthorizationPolicy's provider resolved against the mesh's services, as istiod resolves it:
/// the outbound cluster of the provider's `service` and `port`, which every sidecar has, and the
/// provider's settings. What `envoy.filters.http.ext_authz` is generated from.
public struct ExternalAuthorizer: Sendable, Equatable {
    /// The mesh config's name for it.
    public var provider: String
    /// `outbound|PORT||HOST`.
    public var cluster: String
    /// The service's host, sent as the gRPC authority.
    public var authority: String
    public var settings: ExtensionProvider.ExternalAuthorization

    /// The provider named `name`, if the mesh config has it and a ServiceEntry declares its service and
    /// port; else why not, in words for a warning.
    static func resolve(_ name: String, mesh: MeshSettings, services: [ServiceEntry]) -> Result<ExternalAuthorizer, Unresolved> {
        guard let provider = mesh.extensionProvider(named: name) else {
            let known = mesh.extensionProviders.map(\.name)
            return .failure(Unresolved(reason: "the mesh config has no extension provider \"\(name)\" (\(known.isEmpty ? "it has none" : "it has \(known.joined(separator: ", "))"))"))
        }
        let settings = provider.externalAuthorization
        guard let service = services.first(where: { $0.hosts.contains(settings.service) }) else {
            return .failure(Unresolved(reason: "extension provider \"\(name)\": no ServiceEntry declares its service \(settings.service)"))
        }
        guard service.ports.contains(where: { $0.number == settings.port }) else {
            return .failure(Unresolved(reason: "extension provider \"\(name)\": \(settings.service) has no port \(settings.port)"))
        }
        return .success(ExternalAuthorizer(provider: name,
                                           cluster: ProxyConfigGenerator.clusterName(port: settings.port, subset: "", host: settings.service),
                                           authority: settings.service, settings: settings))
    }

    struct Unresolved: Error {
        var reason: String
    }
}
