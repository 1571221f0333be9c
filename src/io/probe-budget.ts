/**
 * The probe budget of an open-addressing table keyed by names that come from a file: zip entry names
 * (zip/name-index.ts) and state-dict keys (match/key-index.ts). Their hashes are cheap and a file can
 * choose names that collide, which would put every name in one probe chain and make a listing or a match
 * quadratic. Every probe past the first is charged to the budget, each operation refills it by
 * PROBE_ALLOWANCE, and once it runs out the table turns into a Map (V8's own seeded hash): honest names
 * never get there, and a hostile file costs at most PROBE_ALLOWANCE probes per operation before it does.
 */

/** Probes each operation may use on average before the table gives up hashing and becomes a Map. */
const PROBE_ALLOWANCE = 8;
/** Probes allowed up front, before operations have refilled the budget (small tables, unlucky starts). */
const INITIAL_PROBE_BUDGET = 1024;

export class ProbeBudget {
  private left = INITIAL_PROBE_BUDGET;

  /** Called once per insert or lookup. */
  refill(): void {
    this.left += PROBE_ALLOWANCE;
  }

  /** Charges one probe past the first; false once the budget is spent (the table should become a Map). */
  spend(): boolean {
    return --this.left >= 0;
  }
}
