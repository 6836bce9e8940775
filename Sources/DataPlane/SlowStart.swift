import Configuration
import Glibc
import XDS

extension BootstrapConfig.Cluster {
    /// Envoy's slow start (`slow_start_config` of `round_robin_lb_config` or `least_request_lb_config`):
    /// a host that joined the cluster less than `window` ago weighs its weight × max(f^(1/aggression),
    /// minimum), where f is the share of the window it has been in (at least 1 ms of it), and the
    /// minimum is `min_weight_percent` (Envoy's default 10 %).
    struct SlowStart: Sendable, Equatable {
        /// `slow_start_window`.
        var window: Duration
        /// `aggression.default_value` (Envoy's default 1.0: linear; a value not above 0 counts as 1.0, as
        /// in Envoy). Capstan has no runtime: the runtime key is not read.
        var aggression: Double
        /// `min_weight_percent`, as a fraction (0.1).
        var minimumWeight: Double

        init(window: Duration, aggression: Double = 1, minimumWeight: Double = 0.1) {
            self.window = window
            self.aggression = aggression > 0 && !aggression.isNaN ? aggression : 1
            self.minimumWeight = minimumWeight
        }

        init(_ proto: Envoy_Config_Cluster_V3_Cluster.SlowStartConfig, path: String) throws(ConfigError) {
            let window = Duration.seconds(proto.slowStartWindow.seconds) + .nanoseconds(Int64(proto.slowStartWindow.nanos))
            guard window >= .zero else { throw ConfigError(path: "\(path).slow_start_window", message: "must not be negative") }
            var minimum = 0.1
            if proto.hasMinWeightPercent {
                let percent = proto.minWeightPercent.value
                guard (0...100).contains(percent) else {
                    throw ConfigError(path: "\(path).min_weight_percent.value", message: "\(percent) is out of range 0-100")
                }
                minimum = percent / 100
            }
            self.init(window: window, aggression: proto.hasAggression ? proto.aggression.defaultValue : 1, minimumWeight: minimum)
        }

        /// The factor a host's weight is multiplied by, `age` after it joined (1 once the window is past).
        func factor(age: Duration) -> Double {
            guard age < window else { return 1 }
            let windowMilliseconds = Double(window.components.seconds) * 1000 + Double(window.components.attoseconds) / 1e15
            let ageMilliseconds = max(1, Double(age.components.seconds) * 1000 + Double(age.components.attoseconds) / 1e15)
            let share = ageMilliseconds / windowMilliseconds
            let ramped = aggression == 1 || share == 1 ? share : pow(share, 1 / aggression)
            return max(ramped, minimumWeight)
        }
    }
}
