import Routing
import Testing

/// Choosing the virtual host by authority, as Envoy does: exact, then the longest `*suffix`, then the
/// longest `prefix*`, then `*`; case-insensitive; the port part of the host unless ignored.
struct VirtualHostDomainsTests {
    static let configuration = """
        {"name": "domains", "virtual_hosts": [
          {"name": "exact",        "domains": ["www.foo.com", "WWW.Bar.com", "foo.com:8080"], "routes": []},
          {"name": "suffix",       "domains": ["*.foo.com"], "routes": []},
          {"name": "longerSuffix", "domains": ["*.api.foo.com", "*-bar.foo.com"], "routes": []},
          {"name": "prefix",       "domains": ["foo.*"], "routes": []},
          {"name": "longerPrefix", "domains": ["foo.bar.*"], "routes": []},
          {"name": "any",          "domains": ["*"], "routes": []}
        ]}
        """

    @Test(arguments: [
        ("www.foo.com", "exact"),
        ("WWW.FOO.COM", "exact"),
        ("www.bar.com", "exact"),               // the configured domain is lowercased too
        ("a.foo.com", "suffix"),
        ("v1.api.foo.com", "longerSuffix"),     // longest suffix wins
        ("baz-bar.foo.com", "longerSuffix"),
        ("-bar.foo.com", "suffix"),             // a wildcard never matches nothing
        (".foo.com", "any"),                    // nor does the `*` of *.foo.com
        ("foo.org", "prefix"),
        ("foo.bar.org", "longerPrefix"),
        ("foo.", "any"),                        // `foo.*` needs something after the dot
        ("elsewhere.org", "any"),
        ("", "any"),
        ("foo.com:8080", "exact"),              // ports are part of the host
        ("www.foo.com:80", "any"),              // so www.foo.com:80 is neither www.foo.com nor *.foo.com
    ])
    func chooses(authority: String, expected: String) throws {
        let table = try routeTable(Self.configuration)
        #expect(table.virtualHostName(authority) == expected)
    }

    @Test func ignoresThePortWhenTheConfigurationSaysSo() throws {
        let table = try routeTable("""
            {"name": "p", "ignore_port_in_host_matching": true, "virtual_hosts": [
              {"name": "web", "domains": ["web.svc"], "routes": []},
              {"name": "v6", "domains": ["[::1]"], "routes": []}]}
            """)
        #expect(table.virtualHostName("web.svc:8080") == "web")
        #expect(table.virtualHostName("WEB.svc:80") == "web")
        #expect(table.virtualHostName("[::1]:443") == "v6")
        #expect(table.virtualHostName("[::1]") == "v6")
        #expect(table.virtualHostName("other:80") == nil)
    }

    @Test func keepsThePortByDefault() throws {
        let table = try routeTable(#"{"name": "p", "virtual_hosts": [{"name": "web", "domains": ["web.svc"], "routes": []}]}"#)
        #expect(table.virtualHostName("web.svc") == "web")
        #expect(table.virtualHostName("web.svc:8080") == nil)
    }

    @Test(arguments: [
        (#"[{"name": "a", "domains": ["x.com"], "routes": []}, {"name": "b", "domains": ["X.com"], "routes": []}]"#,
         "route_config \"d\".virtual_hosts[1].domains[0]"),
        (#"[{"name": "a", "domains": ["*"], "routes": []}, {"name": "b", "domains": ["*"], "routes": []}]"#,
         "route_config \"d\".virtual_hosts[1].domains[0]"),
        (#"[{"name": "a", "domains": [], "routes": []}]"#, "route_config \"d\".virtual_hosts[0].domains"),
        (#"[{"name": "", "domains": ["*"], "routes": []}]"#, "route_config \"d\".virtual_hosts[0].name"),
    ])
    func refuses(virtualHosts: String, path: String) throws {
        #expect(try refusal(#"{"name": "d", "virtual_hosts": \#(virtualHosts)}"#)?.path == path)
    }
}
