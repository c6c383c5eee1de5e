// Package credential is wechatconf's refresh engine: a Keeper keeps one
// WeChat credential (an access token, a ticket) valid for every node of a
// deployment, so that exactly one node grants each new one, through a
// store.Store that the nodes share.
//
// A Keeper is given, in essence, a store key, a grant function and a policy
// (Config). Everything else is the same for every credential:
//
//   - Hot path: a fresh local copy is returned with four atomic loads: no
//     lock, no allocation, no I/O, no clock read (a timer marks the copy due
//     for a refresh or a re-read of the store).
//   - One flight per process: a refresh runs on a goroutine of its own,
//     bounded by its own timeout; it belongs to no caller, so one caller's
//     short deadline never cancels the work others wait for. Close waits
//     for it.
//   - Stale while revalidating: while the local copy is still valid (its
//     expiry less 10 s) callers get it at once, whether a refresh is in
//     flight, the store is slow or WeChat fails; only callers with no valid
//     copy wait, each on its own context.
//   - The store's lease: a grant happens under it, after a second read of
//     the store (another node may have granted meanwhile). The lease's
//     deadline counts from Lock, it is extended while a grant runs long
//     (store.Extender), and a grant is stored only while the lease is ours.
//   - Compare-then-refresh: a value WeChat rejected (Invalidate) is replaced
//     only if the store still holds it; otherwise another node already did.
//   - Bad days: every store call has its own bound; a store error is never a
//     miss; with the store down and no valid copy a process grants without
//     the lease at most once per cycle (Request.Leaseless: a grant that can
//     harm no other node's credential); nothing the store holds is trusted
//     beyond what WeChat can mean (store.Item.Plausible); forced refreshes
//     are limited across the cluster (Policy.ForcedInterval).
//   - Refresh spread: the refresh point of each credential lies somewhere in
//     the first part of its margin (Policy.Spread), derived from its value,
//     so credentials granted in the same second do not all come due in the
//     same second of the next cycle, and every node agrees on the point.
//
// How the real cases map onto it:
//
//   - Official Account / Mini Program access_token (package conf): key
//     "{appid}:access_token"; Grant calls /cgi-bin/token, or stable_token
//     with WithStableToken; a Leaseless grant asks for the stable token
//     without force_refresh, which every node gets alike and which kills no
//     classic token. Policy.Invalid matches 40001, 40014, 42001 on calls
//     made with the token; 40001 on /cgi-bin/token itself (a wrong secret)
//     is Policy.Fatal, never retried.
//   - jsapi and wx_card tickets: their Grant receives the token's Keeper,
//     gets the token from it and, when WeChat rejects the token, invalidates
//     it there first (compare-then-refresh) and asks once more.
//   - WeCom app tokens: one Keeper per (CorpID, app secret), keyed by a
//     stable non-reversible id of the secret when there is no AgentID;
//     gettoken returns the same token on a repeat call, so a Leaseless
//     grant is harmless. There 40001 means a wrong secret: Policy.Fatal,
//     reported once and never taken for a stale token; 40014 and 42001 are
//     Policy.Invalid. The corp and agent_config tickets are like the
//     Official Account's tickets, over the app's token Keeper.
//   - Open Platform: the component_access_token's Grant reads the latest
//     component_verify_ticket (pushed by WeChat into the store every 10
//     minutes) itself; an authorizer token's Grant consumes the stored
//     authorizer_refresh_token and must store a rotated one atomically with
//     the token (an input the engine does not yet carry: see the issue on
//     the Open Platform). Thousands of Keepers in one process cost no
//     goroutine while idle: a timer per local copy.
//
// Keeper implements Source, the one-method view (like oauth2.TokenSource,
// but context-aware) that adapters, test doubles and Transport compose
// with.
package credential
