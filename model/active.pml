/*
 * active.pml -- Promela model of the Active (active reference) protocol of
 * ../active.go, checked exhaustively by ./check.sh.
 *
 * ===========================================================================
 * STEP MAP  (Promela <-> active.go)
 *
 * One Promela transition = one access to shared memory in Go: one
 * sync/atomic operation (all sequentially consistent, so interleaving is
 * exact) or one channel close.  Purely local work (choosing a slot, loop
 * counters, resetting locals, ghost bookkeeping) is folded into the atomic{}
 * of the shared access it belongs to; this only removes stutter states.
 * A branch on a value just loaded is written as an if whose guards are the
 * load itself, so "load; branch" stays one transition, as in Go.
 * Spin refuses a label on the first statement of an inline body or of an
 * if/do option; where that bites, the label sits at the call site or the
 * step is named in a comment (marked "(no label)").
 *
 * A slot word is even while free and odd while an access is inside it;
 * every change adds one, so the value is also the slot's generation.  The
 * model's slots are every slot Go's idle() reads: the shards' slots, then
 * the spill blocks' (a block not yet published when idle() loads the chain
 * is a run of slots read as free at that moment, which they were).
 *
 *  Go    active.go  (function: code)               active.pml  (inline / label)
 *  ----  -----------------------------------------  ------------------------------
 *  E1    Enter (and Do, written out): w := s.Load()  E1_STEP(s, w): the first free
 *        of the CPU's first slot; if even,           slot from any shard's first,
 *        s.CompareAndSwap(w, w+1); else enterSlow    made odd, w = its new value.
 *        -> takeSlot -> take: the same on the next   A Load that finds the slot
 *        slots; a new spill block's slot, odd        taken and a failed CAS change
 *        before the block is published               nothing: no step (see TAKE).
 *                                                    Label E1: in SelfRemover and
 *                                                    Stale; Accessor's loop head
 *  E2    Enter: st := a.state.Load(); if st ==       label E2: the if whose two
 *        activeLive ... return Token{s, w+1}, true   guards are the load: E2_LIVE
 *                                                    (access begins, ghost inside++)
 *                                                    or E2_DEAD
 *  E3    entered: s.Add(1); a.settle();              fail(): first step, label E3:
 *        return Token{}, false                       at the call site; then settle()
 *  X1    Exit (and Do's deferred func):              leave(): first step, X1_CAS,
 *        s.CompareAndSwap(t.w, t.w+1)                label X1: at the call site
 *                                                    (inside--); asserts it succeeds
 *  X2    Exit: if a.state.Load() != activeLive       leave(): label X2: if
 *        { exitSlow -> a.settle() }                  state != LIVE -> settle()
 *  Break Break: the same CAS as X1, then X2;         SelfRemover: label B_X1: leave()
 *        t.w = tokenBroken (local: no step)
 *        Exit of a broken Token: no shared access    SelfRemover: no step
 *  SX1   Exit of a stale copy of a Token (misuse):   Stale: label SX1: X1_CAS with
 *        the X1 CAS with the copy's t.w, which the   the copy's slot and value;
 *        slot no longer holds: it fails; misuse()    asserts it failed (P5)
 *  S1    sever: if a.state.CompareAndSwap(           sever(): first step, label S1:
 *               activeLive, activeSevering)          at the call site: an if of two
 *               { won = true; ... }                  atomic options = the CAS (ghost
 *                                                    s1runs++; wins++ if it won)
 *        sever: (winner) close(a.begun)              label S1_begun: begun = true
 *  S2    sever: a.settle()                           label S2: settle()
 *  S3    sever: if a.state.Load() == activeSevered   label S3: state == SEVERED
 *        { return }; wait: select { case <-drained:  || drained -> (return)
 *               return ... }                         (ghost returned++)
 *        (the ctx.Done(), grace and watchdog cases change no shared state
 *        the protocol reads, and are not modelled)
 *  T1    settle: a.state.Load() == activeSevering    settle(): its first if, guard
 *                                                    state == SEVERING (no label)
 *  T1    settle: && a.idle();                        label T1_idle: one transition
 *        idle(): each slot's Load()&1, shards then   per slot read, in slot order,
 *        spill blocks; false at the first odd one    never a snapshot; stops at the
 *                                                    first odd slot, as Go does
 *  T1    settle: && a.state.CompareAndSwap(          label T1_cas: cas_close(), an if
 *               activeSevering, activeSevered)       of two atomic options = the CAS
 *  T1    settle: { close(a.drained) }                label T1_close: drained = true
 *
 * Processes:
 *  Accessor     NITER times: Enter; if it got in: (inside) Exit.  Every Enter
 *               takes any free slot; an Enter may fail.
 *  Severer      Sever (sever with won ignored).
 *  SelfRemover  Enter; if it got in: SeverSelf = Break + sever, recording won
 *               (ghost selfwins); then Exit of the broken Token (no step).
 *  Stale        Enter; if it got in: keep a copy of the Token, Exit, then
 *               Exit the copy (misuse: SX1), as NITER accessors race on.
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
 *  P5 a Token names its access: the X1 of a Token that is inside always
 *     succeeds (asserted at X1), and the X1 of a stale copy never changes a
 *     slot (asserted at SX1), whatever else is inside.
 *
 * CONFIGURATION (spin -DNAME=value): NACC accessors, NITER accesses each,
 * NSEV plain severers, NSELF self-removers, NSTALE stale-copy exiters;
 * NSHARD (1..4) shards of SPS slots each.  NSLOT = NSHARD * SPS must be at
 * least the number of processes that can be inside at once (init asserts
 * it), so an Enter always finds a slot, as Go's spill blocks guarantee.
 *
 * DELIBERATE BUGS (check.sh requires pan to report an error for each):
 *  BUG_CHECK_BEFORE_INC   Enter loads state (E2) before it takes a slot (E1)
 *  BUG_NO_SETTLE_ON_EXIT  Exit (and Break) skip X2: no settle after X1
 *  BUG_NO_SETTLE_ON_FAIL  a failed Enter skips the settle after E3
 *  BUG_SETTLE_NO_CAS      settle closes drained without the
 *                         severing->severed CAS
 *  BUG_EXIT_ADD           X1 adds one to the slot instead of the CAS from
 *                         the Token's value (the old counter's decrement)
 * ===========================================================================
 */

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
#ifndef NSTALE
#define NSTALE 0
#endif
#ifndef NSHARD
#define NSHARD 2
#endif
#ifndef SPS
#define SPS 2
#endif
#define NSLOT (NSHARD * SPS)

/* GEN is the modulus of a slot's value.  A stale copy needs the whole
 * generation (GEN 256: no run here reuses a slot 128 times).  Without
 * Stale processes every Token is exited once, by its owner, and every
 * step depends on a slot's parity alone (E1 takes an even slot, idle
 * reads odd ones, X1 of a Token inside finds its own value, as P5's first
 * half asserts in the runs with generations), so GEN 2 gives the same
 * behaviour with far fewer states. */
#ifndef GEN
#if NSTALE > 0
#define GEN 256
#else
#define GEN 2
#endif
#endif
#define INC(x) x = (x + 1) % GEN

#define LIVE     0
#define SEVERING 1
#define SEVERED  2

/* shared state, as in struct Active */
byte state = LIVE;
byte slot[NSLOT];    /* even: free; odd: an access inside; +1 per change */
bool begun;          /* close(a.begun)   */
bool drained;        /* close(a.drained) */

/* ghost state */
byte inside;
byte returned;
byte s1runs;
byte wins;
byte selfwins;
byte closes;

/* E1: the first free slot from the first slot of any shard on (Go: from
 * the first slot of the CPU's shard, and the CPU is any), wrapping round.
 * The model's scan is one step; Go's Loads of taken slots are not, so Go
 * may take a later slot while an earlier one has just been freed.  Which
 * free slot an E1 takes matters to nothing but where idle() reads it, and
 * the choice of shard already lets an E1 land on either side of a running
 * idle() scan; "any free slot" (checked while writing this model, base
 * configuration: 1.7M states, no error) multiplies the states of the
 * larger runs past what check.sh can afford.  There is always a free slot:
 * NSLOT leaves one for every process. */
#define TAKE(s, w) \
	if \
	:: s = 0 \
	:: NSHARD > 1 -> s = SPS \
	:: NSHARD > 2 -> s = 2 * SPS \
	:: NSHARD > 3 -> s = 3 * SPS \
	fi; \
	do \
	:: slot[s] % 2 == 0 -> break \
	:: else -> s = (s + 1) % NSLOT \
	od; \
	INC(slot[s]); w = slot[s]

/* Enter, E1 and E2.  E2_LIVE is an atomic{} opening with its guard;
 * E2_DEAD is a plain guard.  The pair is the two options of one if. */
#ifndef BUG_CHECK_BEFORE_INC
#define E1_STEP(s, w) \
	atomic { TAKE(s, w) }
#define E2_LIVE(s) \
	atomic { \
		state == LIVE -> \
		assert(returned == 0);  /* P1 */ \
		inside++ \
	}
#define E2_DEAD(s) \
	state != LIVE
#else
/* BUG: state is loaded first (into ld), the slot taken after. */
#define E1_STEP(s, w) \
	atomic { ld = state }
#define E2_LIVE(s) \
	atomic { \
		ld == LIVE -> \
		TAKE(s, w); \
		assert(returned == 0);  /* P1 */ \
		inside++; ld = 0 \
	}
#define E2_DEAD(s) \
	atomic { ld != LIVE -> TAKE(s, w); ld = 0 }
#endif

/* X1: the CAS from the Token's value w to w+1; ok says whether it
 * succeeded.  Under BUG_EXIT_ADD it adds one unconditionally. */
#ifndef BUG_EXIT_ADD
#define X1_CAS(s, w, ok) \
	if \
	:: slot[s] == w -> INC(slot[s]); ok = true \
	:: slot[s] != w -> ok = false \
	fi
#else
#define X1_CAS(s, w, ok) \
	INC(slot[s]); ok = true
#endif

/* T1's CAS and close, reached only when every slot read even. */
inline cas_close()
{
	if
#ifndef BUG_SETTLE_NO_CAS
	:: atomic { state == SEVERING -> state = SEVERED };
#else
	:: true -> state = SEVERED;   /* BUG: no CAS */
#endif
T1_close:
		atomic {
			assert(!drained);     /* P4: at most once */
			assert(inside == 0);  /* P4: only with nothing inside */
			drained = true;
			closes++
		}
#ifndef BUG_SETTLE_NO_CAS
	:: atomic { state != SEVERING -> skip }
#endif
	fi
}

/* settle(): T1.  idle() reads the slots one at a time, one transition
 * each, any other process running between two reads, and stops at the
 * first odd one. */
inline settle(i)
{
	if
	:: state == SEVERING ->          /* T1: state.Load() == severing */
		i = 0;
T1_idle:
		do
		:: atomic { i < NSLOT && slot[i] % 2 == 0 -> i++ }
		:: atomic { i < NSLOT && slot[i] % 2 == 1 -> i = 0; break }  /* not idle */
		:: i == NSLOT ->
			i = 0;
T1_cas:
			cas_close();
			break
		od
	:: state != SEVERING
	fi
}

/* Exit (and Break): X1, X2.  Label X1 (B_X1) at the call site. */
inline leave(s, w, ok, i)
{
	atomic {
		X1_CAS(s, w, ok);
		assert(ok);          /* P5: a Token that is inside exits */
		inside--;
		s = 0; w = 0; ok = false
	};
#ifndef BUG_NO_SETTLE_ON_EXIT
X2:
	if
	:: state != LIVE -> settle(i)
	:: state == LIVE
	fi
#endif
}

/* failed Enter: E3, then settle.  Label E3 at the call site. */
inline fail(s, w, i)
{
	atomic { assert(slot[s] == w); INC(slot[s]); s = 0; w = 0 };
#ifndef BUG_NO_SETTLE_ON_FAIL
	settle(i)
#endif
}

/* sever: S1, S2, S3.  Label S1 at the call site.  self: 1 for SeverSelf. */
inline sever(i, won, self)
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
	settle(i);
S3:
	atomic {
		(state == SEVERED || drained) ->
		assert(inside == 0);  /* P1: nothing inside when a Sever returns */
		returned++
	}
}

proctype Accessor()
{
	byte s, w, i, iter;
	bool ok;
#ifdef BUG_CHECK_BEFORE_INC
	byte ld;
#endif

	do
	:: atomic { iter < NITER -> iter++; E1_STEP(s, w) };   /* E1 */
E2:
		if
		:: E2_LIVE(s);
			/* inside: the access runs here */
X1:			leave(s, w, ok, i)
		:: E2_DEAD(s) ->
E3:			fail(s, w, i)
		fi
	:: iter == NITER -> break
	od
}

proctype Severer()
{
	byte i;
	bool won;

S1:	sever(i, won, 0)
}

proctype SelfRemover()
{
	byte s, w, i;
	bool ok, won;
#ifdef BUG_CHECK_BEFORE_INC
	byte ld;
#endif

E1:	E1_STEP(s, w);
E2:
	if
	:: E2_LIVE(s);
		/* inside.  SeverSelf(t) = Break(t), then sever. */
B_X1:		leave(s, w, ok, i);
S1:		sever(i, won, 1)
		/* Exit(t) of the broken Token returns at once: no step */
	:: E2_DEAD(s) ->
E3:		fail(s, w, i)
	fi
}

proctype Stale()
{
	byte s, w, cs, cw, i;
	bool ok;
#ifdef BUG_CHECK_BEFORE_INC
	byte ld;
#endif

E1:	E1_STEP(s, w);
E2:
	if
	:: E2_LIVE(s);
		atomic { cs = s; cw = w };   /* the copy: local, no step */
X1:		leave(s, w, ok, i);
		/* Exit of the copy: its CAS must fail and change nothing */
SX1:		atomic {
			X1_CAS(cs, cw, ok);
			assert(!ok);         /* P5: a stale copy changes no slot */
			cs = 0; cw = 0
		}
	:: E2_DEAD(s) ->
E3:		fail(s, w, i)
	fi
}

init
{
	byte i;

	atomic {
		assert(NSLOT >= NACC + NSELF + NSTALE);
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
		i = 0;
		do
		:: i < NSTALE -> run Stale(); i++
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
			:: i < NSLOT -> assert(slot[i] % 2 == 0); i++
			:: else -> break
			od
		}
	:: else
	fi
}
