@testable import ControlPlane
import Testing

/// How istiod rewrites the peer principals of AuthorizationPolicies for the mesh's trust domain and its
/// aliases (its `trustdomain.Bundle`), case by case.
@Suite struct TrustDomainBundleTests {
    @Test(arguments: [
        // The default trust domain, no aliases: nothing changes, wildcards included.
        ("cluster.local", [], ["cluster.local/ns/foo/sa/bar", "*", "*/ns/foo/sa/bar"], ["cluster.local/ns/foo/sa/bar", "*", "*/ns/foo/sa/bar"]),
        // `cluster.local` stands for the mesh's trust domain.
        ("td1", [], ["cluster.local/ns/foo/sa/bar"], ["td1/ns/foo/sa/bar"]),
        // A migration: either trust domain, both written.
        ("td2", ["td1"], ["td1/ns/foo/sa/bar"], ["td2/ns/foo/sa/bar", "td1/ns/foo/sa/bar"]),
        ("td2", ["td1", "cluster.local"], ["cluster.local/ns/foo/sa/bar", "td1/ns/yyy/sa/zzz"],
         ["td2/ns/foo/sa/bar", "td1/ns/foo/sa/bar", "cluster.local/ns/foo/sa/bar", "td2/ns/yyy/sa/zzz", "td1/ns/yyy/sa/zzz", "cluster.local/ns/yyy/sa/zzz"]),
        // A wildcard trust domain that covers an alias stays as written, once.
        ("td2", ["foo-td1", "cluster.local"], ["*-td1/ns/foo/sa/bar"], ["td2/ns/foo/sa/bar", "*-td1/ns/foo/sa/bar", "cluster.local/ns/foo/sa/bar"]),
        // Other trust domains, and what is not TD/ns/NS/sa/SA, are kept.
        ("td1", ["td2"], ["some-td/ns/foo/sa/bar", "sa/bar", "*sa/zzz"], ["some-td/ns/foo/sa/bar", "sa/bar", "*sa/zzz"]),
        ("new-td", ["td2", "td3"], ["td1/ns/some-ns/sa/some-sa", "td2/ns/foo/sa/bar"],
         ["td1/ns/some-ns/sa/some-sa", "new-td/ns/foo/sa/bar", "td2/ns/foo/sa/bar", "td3/ns/foo/sa/bar"]),
    ] as [(String, [String], [String], [String])])
    func principalsAreRewrittenAsIstiodDoes(trustDomain: String, aliases: [String], principals: [String], expected: [String]) {
        #expect(TrustDomainBundle(trustDomain: trustDomain, aliases: aliases).principals(principals) == expected)
    }

    @Test func aliasesAreReadFromTheMeshConfigAndChecked() throws {
        let good = MeshConfigReader.read([("istio.yaml", MeshSettingsTests.configMap("trustDomainAliases: [old-td, Legacy.Example]"))])
        #expect(try #require(good.config, "\(good.problems)").mesh.trustDomainAliases == ["old-td", "legacy.example"])
        let bad = MeshConfigReader.read([("istio.yaml", MeshSettingsTests.configMap("trustDomainAliases: [old-td, \"bad/td\"]"))])
        #expect(bad.config == nil)
        #expect(bad.problems.first?.description.contains("data.mesh.trustDomainAliases[1]: \"bad/td\" is not a trust domain") == true, "\(bad.problems)")
    }
}
