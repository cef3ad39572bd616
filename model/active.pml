/*
 * active.pml -- Promela model of the Active (active reference) protocol of
 * ../active.go, checked exhaustively by ./check.sh.
 *
 * ===========================================================================
 * STEP MAP  (Promela <-> active.go)
 *
 * One Promela transition = one access to shared memory in Go: one
 * sync/atomic operation (all sequentially consistent, so interleaving is
 * exact) or one channel close.  Purely local work (choosing a shard, loop
 * counters, resetting locals, ghost bookkeeping) is folded into the atomic{}
 * of the shared access it belongs to; this only removes stutter states.
 * A branch on a value just loaded is written as an if whose guards are the
 * load itself, so "load; branch" stays one transition, as in Go.
 * Spin refuses a label on the first statement of an inline body or of an
 * if/do option; where that bites, the label sits at the call site or the
 * step is named in a comment (marked "(no label)").
 *
 *  Go    active.go  (function: code)               active.pml  (inline / label)
 *  ----  -----------------------------------------  ------------------------------
 *  E1    Enter: i := shardHint() & a.mask;           E1_STEP(s): select(s) picks any
 *               s.n.Add(1)                           shard, then shard[s]++.  Label
 *                                                    E1: in SelfRemover; in Accessor
 *                                                    the loop head (no label)
 *  E2    Enter: if a.state.Load() != activeLive      label E2: the if whose two
 *               ... return t, true                   guards are the load: E2_LIVE
 *                                                    (access begins, ghost inside++)
 *                                                    or E2_DEAD
 *  E3    Enter: s.n.Add(-1); a.settle();             fail(): first step, label E3:
 *               return Token{}, false                at the call site; then settle()
 *  X1    Exit:  a.shards[t.shard-1].n.Add(-1)        leave(): first step, label X1:
 *                                                    at the call site (inside--)
 *  X2    Exit:  if a.state.Load() != activeLive      leave(): label X2: if
 *               { a.settle() }                       state != LIVE -> settle()
 *  Break Break: t.broken = true; X1; X2 (the same    SelfRemover: label B_X1: leave()
 *        code as Exit's X1, X2)                      (t.broken is local: no step)
 *        Exit of a broken Token: return at once      SelfRemover: no step
 *  S1    sever: if a.state.CompareAndSwap(           sever(): first step, label S1:
 *               activeLive, activeSevering)          at the call site: an if of two
 *               { won = true; ... }                  atomic options = the CAS (ghost
 *                                                    s1runs++; wins++ if it won)
 *        sever: (winner) close(a.begun)              label S1_begun: begun = true
 *  S2    sever: a.settle()                           label S2: settle()
 *  S3    sever: select { case <-a.drained:           label S3: drained -> (return)
 *               return won, nil }                    (ghost returned++)
 *        (the ctx.Done() case is not modelled)
 *  T1    settle: a.state.Load() == activeSevering    settle(): its first if, guard
 *                                                    state == SEVERING (no label)
 *  T1    settle: && a.sum() == 0;                    label T1_sum: one transition
 *        sum(): for i { n += shards[i].n.Load() }    per shard read, in shard order,
 *                                                    never an atomic snapshot (see
 *                                                    settle() on the early exit;
 *                                                    -DFULL_SUM: literal sum(n))
 *  T1    settle: && a.state.CompareAndSwap(          label T1_cas: cas_close(), an if
 *               activeSevering, activeSevered)       of two atomic options = the CAS
 *  T1    settle: { close(a.drained) }                label T1_close: drained = true
 *
 * Processes:
 *  Accessor     NITER times: Enter; if it got in: (inside) Exit.  Every Enter
 *               picks its shard nondeterministically; an Enter may fail.
 *  Severer      Sever (sever with won ignored).
 *  SelfRemover  Enter; if it got in: SeverSelf = Break + sever, recording won
 *               (ghost selfwins); then Exit of the broken Token (no step).
 *  init         starts them all, waits until nothing else can move, then
 *               checks the end state.
 *
 * Ghost variables (no Go counterpart): inside = accesses legitimately inside
 * (E2 saw live; X1 or Break's X1 not yet done); returned = Sever calls
 * returned; s1runs = S1 executions; wins = S1 CAS winners; selfwins = ones of
 * those that were SeverSelf; closes = closes of drained.
 *
 * PROPERTIES
 *  P1 no access after Sever returned: assert inside == 0 when any Sever
 *     returns (S3), and assert at E2 that no Sever has returned when an
 *     access begins.
 *  P2 no lost wake-up: a process blocked forever (a Sever in S3) is an
 *     invalid end state, which pan reports; nothing else can block.  Every
 *     process runs a bounded number of steps, so "every Sever eventually
 *     returns" is exactly "no reachable end state with a Sever still in S3";
 *     no fairness assumption is needed.
 *  P3 exactly one S1 winner: assert wins == 0 before a winning CAS, and
 *     wins == 1 at the end.
 *  P4 drained is closed at most once, and only with nothing inside: assert
 *     !drained && inside == 0 at T1_close, and closes == 1 at the end.
 *
 * CONFIGURATION (spin -DNAME=value): NSHARD (1..4) shards, NACC accessors,
 * NITER accesses each, NSEV plain severers, NSELF self-removers; FULL_SUM
 * makes sum() read every shard, as Go does, instead of stopping at the first
 * nonzero shard (see settle()).
 *
 * DELIBERATE BUGS (check.sh requires pan to report an error for each):
 *  BUG_CHECK_BEFORE_INC   Enter loads state (E2) before its increment (E1)
 *  BUG_NO_SETTLE_ON_EXIT  Exit (and Break) skip X2: no settle after X1
 *  BUG_NO_SETTLE_ON_FAIL  a failed Enter skips the settle after E3
 *  BUG_SETTLE_NO_CAS      settle closes drained without the
 *                         severing->severed CAS
 * ===========================================================================
 */

#ifndef NSHARD
#define NSHARD 2
#endif
#ifndef NACC
#define NACC 2
#endif
#ifndef NITER
#define NITER 2
#endif
#ifndef NSEV
#define NSEV 1
#endif
#ifndef NSELF
#define NSELF 1
#endif

#define LIVE     0
#define SEVERING 1
#define SEVERED  2

/* shared state, as in struct Active */
byte state = LIVE;
byte shard[NSHARD];  /* never below zero: asserted at X1 and E3 */
bool begun;          /* close(a.begun)   */
bool drained;        /* close(a.drained) */

/* ghost state */
byte inside;
byte returned;
byte s1runs;
byte wins;
byte selfwins;
byte closes;

/* Enter, E1 and E2.  E2_LIVE is an atomic{} opening with its guard;
 * E2_DEAD is a plain guard.  The pair is the two options of one if. */
#ifndef BUG_CHECK_BEFORE_INC
#define E1_STEP(s) \
	atomic { select(s : 0 .. NSHARD - 1); shard[s]++ }
#define E2_LIVE(s) \
	atomic { \
		state == LIVE -> \
		assert(returned == 0);  /* P1 */ \
		inside++ \
	}
#define E2_DEAD(s) \
	state != LIVE
#else
/* BUG: state is loaded first (into ld), the shard incremented after. */
#define E1_STEP(s) \
	atomic { ld = state }
#define E2_LIVE(s) \
	atomic { \
		ld == LIVE -> \
		select(s : 0 .. NSHARD - 1); shard[s]++; \
		assert(returned == 0);  /* P1 */ \
		inside++; ld = 0 \
	}
#define E2_DEAD(s) \
	atomic { ld != LIVE -> select(s : 0 .. NSHARD - 1); shard[s]++; ld = 0 }
#endif

/* T1's CAS and close, reached only when the sum read zero.  n is the sum
 * (always 0 here unless FULL_SUM, where it is tested as Go tests it). */
inline cas_close(n)
{
	if
#ifndef BUG_SETTLE_NO_CAS
	:: atomic { n == 0 && state == SEVERING -> state = SEVERED; n = 0 };
#else
	:: atomic { n == 0 -> state = SEVERED; n = 0 };   /* BUG: no CAS */
#endif
T1_close:
		atomic {
			assert(!drained);     /* P4: at most once */
			assert(inside == 0);  /* P4: only with nothing inside */
			drained = true;
			closes++
		}
#ifndef BUG_SETTLE_NO_CAS
	:: atomic { !(n == 0 && state == SEVERING) -> n = 0 }
#else
	:: atomic { n != 0 -> n = 0 }
#endif
	fi
}

#ifdef FULL_SUM
/* sum(), literally: every shard is read, one transition per shard; any
 * other process may run between two reads. */
inline sum(n)
{
	atomic { n = shard[0] };
#if NSHARD > 1
	atomic { n = n + shard[1] };
#endif
#if NSHARD > 2
	atomic { n = n + shard[2] };
#endif
#if NSHARD > 3
	atomic { n = n + shard[3] };
#endif
}

/* settle(): T1 */
inline settle(n)
{
	if
	:: state == SEVERING ->          /* T1: state.Load() == severing */
T1_sum:
		sum(n);
T1_cas:
		cas_close(n)
	:: state != SEVERING
	fi
}
#else
/* settle(): T1, with sum() short-circuited.  The shards are still read one
 * at a time, one transition each, any other process running between two
 * reads; but T1 only asks whether the sum is 0, and as no shard is ever
 * below zero (asserted at every decrement) the first nonzero read decides
 * "no".  The reads Go still makes after it change no shared state and
 * decide nothing, so dropping them loses no reachable shared state (they
 * are invisible stutter steps).  -DFULL_SUM checks the literal version. */
inline settle(n)
{
	if
	:: state == SEVERING ->          /* T1: state.Load() == severing */
T1_sum:
		if
		:: shard[0] != 0             /* sum != 0: T1 fails */
		:: shard[0] == 0 ->
#if NSHARD > 1
		if
		:: shard[1] != 0
		:: shard[1] == 0 ->
#endif
#if NSHARD > 2
		if
		:: shard[2] != 0
		:: shard[2] == 0 ->
#endif
#if NSHARD > 3
		if
		:: shard[3] != 0
		:: shard[3] == 0 ->
#endif
T1_cas:
			cas_close(n)
#if NSHARD > 3
		fi
#endif
#if NSHARD > 2
		fi
#endif
#if NSHARD > 1
		fi
#endif
		fi
	:: state != SEVERING
	fi
}
#endif

/* Exit (and Break): X1, X2.  Label X1 (B_X1) at the call site. */
inline leave(s, n)
{
	atomic {
		assert(shard[s] > 0);
		shard[s]--;
		inside--;
		s = 0
	};
#ifndef BUG_NO_SETTLE_ON_EXIT
X2:
	if
	:: state != LIVE -> settle(n)
	:: state == LIVE
	fi
#endif
}

/* failed Enter: E3, then settle.  Label E3 at the call site. */
inline fail(s, n)
{
	atomic { assert(shard[s] > 0); shard[s]--; s = 0 };
#ifndef BUG_NO_SETTLE_ON_FAIL
	settle(n)
#endif
}

/* sever: S1, S2, S3.  Label S1 at the call site.  self: 1 for SeverSelf. */
inline sever(n, won, self)
{
	if
	:: atomic {
		state == LIVE ->
		state = SEVERING;
		s1runs++;
		assert(wins == 0);  /* P3: never a second winner */
		wins++;
		selfwins = selfwins + self;
		won = true
	   };
S1_begun:
		atomic { assert(!begun); begun = true }
	:: atomic { state != LIVE -> s1runs++; won = false }
	fi;
S2:
	settle(n);
S3:
	atomic {
		drained ->
		assert(inside == 0);  /* P1: nothing inside when a Sever returns */
		returned++
	}
}

proctype Accessor()
{
	byte s, n, iter;
#ifdef BUG_CHECK_BEFORE_INC
	byte ld;
#endif

	do
	:: atomic { iter < NITER -> iter++; E1_STEP(s) };   /* E1 */
E2:
		if
		:: E2_LIVE(s);
			/* inside: the access runs here */
X1:			leave(s, n)
		:: E2_DEAD(s) ->
E3:			fail(s, n)
		fi
	:: iter == NITER -> break
	od
}

proctype Severer()
{
	byte n;
	bool won;

S1:	sever(n, won, 0)
}

proctype SelfRemover()
{
	byte s, n;
	bool won;
#ifdef BUG_CHECK_BEFORE_INC
	byte ld;
#endif

E1:	E1_STEP(s);
E2:
	if
	:: E2_LIVE(s);
		/* inside.  SeverSelf(t) = Break(t), then sever. */
B_X1:		leave(s, n);
S1:		sever(n, won, 1)
		/* Exit(t) of the broken Token returns at once: no step */
	:: E2_DEAD(s) ->
E3:		fail(s, n)
	fi
}

init
{
	byte i;

	atomic {
		i = 0;
		do
		:: i < NACC  -> run Accessor(); i++
		:: else -> break
		od;
		i = 0;
		do
		:: i < NSEV  -> run Severer(); i++
		:: else -> break
		od;
		i = 0;
		do
		:: i < NSELF -> run SelfRemover(); i++
		:: else -> break
		od;
		i = 0
	};

	/* Nothing else can move: every process has ended, or some is blocked.
	 * A blocked one can only be a Sever in S3; init then ends without
	 * asserting and pan reports the invalid end state (P2). */
	timeout;
	if
	:: returned == s1runs ->
		atomic {
			assert(s1runs >= 1);
			assert(wins == 1);               /* P3 */
			assert(selfwins <= 1);
			assert(begun);
			assert(state == SEVERED);
			assert(drained && closes == 1);  /* P4 */
			assert(inside == 0);
			do
			:: i < NSHARD -> assert(shard[i] == 0); i++
			:: else -> break
			od
		}
	:: else
	fi
}
