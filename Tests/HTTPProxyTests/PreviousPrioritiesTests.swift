import HTTPProxy
import Testing

/// Envoy's `previous_priorities` retry priority as values: when it leaves the priorities tried out, how
/// it shares the load among the others by their health, and how it starts over when none is left.
@Suite struct PreviousPrioritiesTests {
    @Test func everyAttemptLeavesItsPriorityOutWithAFrequencyOfOne() {
        var priorities = PreviousPriorities(updateFrequency: 1)
        // The first attempt uses the cluster's own load: nothing was tried yet.
        #expect(priorities.load(health: [100, 100, 100]) == nil)
        priorities.attempted(priority: 0)
        #expect(priorities.load(health: [100, 100, 100]) == [0, 100, 0])
        priorities.attempted(priority: 1)
        #expect(priorities.load(health: [100, 100, 100]) == [0, 0, 100])
        // Every priority tried: they are forgotten, and the load is the health's again.
        priorities.attempted(priority: 2)
        #expect(priorities.load(health: [100, 100, 100]) == [100, 0, 0])
        #expect(priorities.attempted.isEmpty && priorities.excluded == [false, false, false])
    }

    @Test func istiodsFrequencyOfTwoChangesTheLoadOnEverySecondAttempt() {
        var priorities = PreviousPriorities(updateFrequency: 2)
        priorities.attempted(priority: 0)
        // One host tried, below the frequency: the cluster's load (the first retry may stay in priority 0).
        #expect(priorities.load(health: [100, 100]) == nil)
        priorities.attempted(priority: 0)
        #expect(priorities.load(health: [100, 100]) == [0, 100])
        // Three tried: not a multiple of two, the last load stays.
        priorities.attempted(priority: 1)
        #expect(priorities.load(health: [100, 100]) == [0, 100])
        // Four: both priorities tried, so they start over.
        priorities.attempted(priority: 1)
        #expect(priorities.load(health: [100, 100]) == [100, 0])
    }

    @Test func theOthersShareTheLoadByTheirHealthAndRoundingGoesToTheFirst() {
        var priorities = PreviousPriorities(updateFrequency: 1)
        priorities.attempted(priority: 0)
        // 30 and 50 of 80: 37 and 62, and the point rounding lost goes to priority 1.
        #expect(priorities.load(health: [70, 30, 50]) == [0, 38, 62])
        // Healths above 100 in total are capped at 100: priority 1 takes its 100, priority 2 nothing.
        var full = PreviousPriorities(updateFrequency: 1)
        full.attempted(priority: 0)
        #expect(full.load(health: [100, 100, 100]) == [0, 100, 0])
    }

    @Test func withNoHealthLeftAnywhereTheClustersLoadApplies() {
        var priorities = PreviousPriorities(updateFrequency: 1)
        priorities.attempted(priority: 0)
        // Priority 1 has no health: priority 0 is forgotten and takes it all again.
        #expect(priorities.load(health: [40, 0]) == [100, 0])
        priorities.attempted(priority: 1)
        #expect(priorities.load(health: [0, 0]) == nil)
        // A priority the cluster no longer has is ignored.
        var gone = PreviousPriorities(updateFrequency: 1)
        gone.attempted(priority: 5)
        #expect(gone.load(health: [100, 100]) == [100, 0])
    }
}

extension PreviousPrioritiesTests {
    /// Degraded health counts as availability, and the load goes to the degraded hosts of a priority not
    /// tried when that is where it is (Envoy's adjusted healthy and degraded loads).
    @Test func degradedHostsShareTheLoadAfterTheHealthyOnes() {
        var priorities = PreviousPriorities(updateFrequency: 1)
        priorities.attempted(priority: 0)
        let toDegraded = priorities.load(health: [100, 0, 0], degraded: [0, 0, 70])
        #expect(toDegraded?.healthy == [0, 0, 0] && toDegraded?.degraded == [0, 0, 100])
        var mixed = PreviousPriorities(updateFrequency: 1)
        mixed.attempted(priority: 0)
        // 30 healthy and 50 degraded of 80 in priority 1: 37 and 62, rounding's point to the healthy share.
        let shared = mixed.load(health: [100, 30], degraded: [0, 50])
        #expect(shared?.healthy == [0, 38] && shared?.degraded == [0, 62])
    }
}
