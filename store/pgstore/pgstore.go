// Package pgstore shares wechatconf's credentials through PostgreSQL, for
// deployments that already run it: every node reads the same token, and a
// lease row makes sure one node at a time asks WeChat for a new one.
//
// The pool is the caller's, who closes it after the Store: Store.Close ends
// only what the Store started (the LISTEN connection it took out of the pool
// and its goroutine). A Store from store.Open (postgres://...) made its pool
// and closes it.
//
// Two tables hold the data, both created by Migrate (explicitly, or on first
// use unless WithoutAutoMigrate is given):
//
//	<table>        (key text PRIMARY KEY, value text, expires_at timestamptz)
//	<table>_leases (key text PRIMARY KEY, owner bytea, fence bigint, expires_at timestamptz)
//
// Set is newer-wins in one INSERT ... ON CONFLICT statement, so two nodes
// racing can never leave the older grant in place. The lease is a row whose
// expiry comes from the database clock (clock_timestamp()), so nodes with
// skewed clocks agree on when it ends; taking it over bumps a fence counter
// in the row (kept for inspection; no Go API reads it). It is not a session advisory lock: a pool hands the
// connection, and such a lock with it, to someone else.
//
// With WithNotify, Set also sends a NOTIFY and Watch listens on one
// dedicated connection, so that waiting nodes wake as soon as the new token
// is stored; without it, Watch reports ErrNotifyOff and callers poll.
//
// Expiry times are stored as timestamptz, which keeps microseconds: finer
// parts of Item.ExpiresAt are dropped, and newer-wins compares at that
// precision.
//
// Rows written by others: newer-wins protects only plausible rows. Set
// overwrites, whatever its expiry, a row with an empty (or NULL) value, a
// NULL or non-finite expires_at ('infinity', '-infinity'), or an expiry
// beyond the writer's now plus store.MaxLifetime and store.ClockSlack. Get
// reports a row it cannot turn into an Item (a non-finite or NULL expiry, a
// NULL value) with an error matching store.ErrMalformed. A lease row whose
// expires_at is 'infinity' (or NULL) is no lease: pgstore never writes one
// (Unlock writes '-infinity', which has passed), so Lock takes it over as
// free rather than let it block every node for ever.
package pgstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/wechatconf/wechatconf/store"
)

// backend names this package in every *store.OpError it returns.
const backend = "pgstore"

// DefaultTable is the items table used when WithTable is not given; the
// leases table is named after it with a "_leases" suffix. It is exported for
// the DBA who grants the privileges or runs Migrate's SQL by hand (see
// WithoutAutoMigrate), and for stores from store.Open, which use it.
const DefaultTable = "wechatconf"

// ErrNotMigrated is wrapped in the error of an operation that found its
// table missing: call Migrate first (or let the store migrate on first use
// by leaving out WithoutAutoMigrate).
var ErrNotMigrated = errors.New("table does not exist (call Migrate, or drop WithoutAutoMigrate)")

// ErrNotifyOff is returned by Watch on a store made without WithNotify:
// nothing would tell it about Sets made by other nodes, so callers should
// poll instead.
var ErrNotifyOff = errors.New("watch needs LISTEN/NOTIFY: create the store with WithNotify")

// tableName is what WithTable accepts: a plain lower-case identifier, short
// enough that the "_leases" table and the NOTIFY channel name fit in
// PostgreSQL's 63 bytes. It is quoted with pgx.Identifier all the same.
var tableName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,55}$`)

// Option configures New.
type Option func(*config)

type config struct {
	table    string
	prefix   string
	noMigr   bool
	notify   bool
	problems []error
}

// WithTable sets the items table (default DefaultTable). The name must be a
// lower-case identifier of at most 56 characters (letters, digits,
// underscores; not starting with a digit): it names SQL objects, so anything
// else is refused rather than spliced into SQL.
func WithTable(name string) Option {
	return func(c *config) {
		if !tableName.MatchString(name) {
			c.problems = append(c.problems, fmt.Errorf("pgstore: WithTable(%q): want a lower-case identifier matching %s", name, tableName))
			return
		}
		c.table = name
	}
}

// WithPrefix prepends prefix, as is, to every key, so that several
// deployments can share one table. Include a separator: "prod:".
func WithPrefix(prefix string) Option { return func(c *config) { c.prefix = prefix } }

// WithoutAutoMigrate stops the store from creating its tables on first use,
// for deployments where the application's role may not run DDL: run Migrate
// (or its SQL) once with a privileged role instead. Operations on missing
// tables then fail with ErrNotMigrated.
func WithoutAutoMigrate() Option { return func(c *config) { c.noMigr = true } }

// WithNotify makes Set send a NOTIFY when it stores an item and lets Watch
// wake waiters at once, on this node and on every other node of the table.
// The first Watch takes one connection from the pool for good (LISTEN needs
// a session of its own) and starts one goroutine; Close ends both.
func WithNotify() Option { return func(c *config) { c.notify = true } }

// Store is a store.Store over a pgxpool.Pool. It implements io.Closer, its
// leases implement store.Extender, and with WithNotify it is also a working
// store.Watcher. It is safe for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	table  string
	prefix string
	auto   bool
	notify bool
	sql    statements

	migrateSem chan struct{} // one auto-migration at a time
	migrated   atomic.Bool

	closed    atomic.Bool
	closeOnce sync.Once
	stop      context.CancelFunc // ends the listener
	stopCtx   context.Context

	listenSem chan struct{} // guards listening
	listening bool
	wg        sync.WaitGroup

	wmu      sync.Mutex
	watchers map[string]map[*watcher]struct{}

	closePool func() // set when store.Open made the pool
}

var (
	_ store.Store   = (*Store)(nil)
	_ store.Watcher = (*Store)(nil)
	_ io.Closer     = (*Store)(nil)
)

// statements are built once, from the validated, quoted table names.
type statements struct {
	migrateItems, migrateLeases string
	get, set, setNotify         string
	lock, unlock, extend        string
	listen                      string
}

func buildStatements(table string) statements {
	items := pgx.Identifier{table}.Sanitize()
	leases := pgx.Identifier{table + "_leases"}.Sanitize()
	// $4 is the writer's now plus store.MaxLifetime+store.ClockSlack: a
	// stored row past it, or one that is not an item at all, loses
	// newer-wins.
	set := `INSERT INTO ` + items + ` AS t (key, value, expires_at) VALUES ($1, $2, $3)
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at
WHERE t.expires_at < EXCLUDED.expires_at
   OR t.expires_at IS NULL OR NOT isfinite(t.expires_at) OR t.expires_at > $4::timestamptz
   OR t.value IS NULL OR t.value = ''`
	return statements{
		migrateItems: `CREATE TABLE IF NOT EXISTS ` + items + ` (
	key        text PRIMARY KEY,
	value      text NOT NULL,
	expires_at timestamptz NOT NULL
)`,
		migrateLeases: `CREATE TABLE IF NOT EXISTS ` + leases + ` (
	key        text PRIMARY KEY,
	owner      bytea NOT NULL,
	fence      bigint NOT NULL,
	expires_at timestamptz NOT NULL
)`,
		// Rows that are no item are returned too, for Get to report.
		get: `SELECT value, expires_at FROM ` + items + ` WHERE key = $1
AND (expires_at > clock_timestamp() OR expires_at IS NULL OR NOT isfinite(expires_at))`,
		set: set,
		// The NOTIFY goes out with the statement's commit, and only when
		// the row was written: a Set that lost wakes nobody.
		setNotify: `WITH written AS (` + set + ` RETURNING key) SELECT pg_notify($5, key) FROM written`,
		lock: `INSERT INTO ` + leases + ` AS l (key, owner, fence, expires_at) VALUES ($1, $2, 1, clock_timestamp() + $3::interval)
ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner, fence = COALESCE(l.fence, 0) + 1, expires_at = EXCLUDED.expires_at
WHERE l.expires_at < clock_timestamp() OR l.expires_at IS NULL OR NOT isfinite(l.expires_at)
RETURNING fence`,
		// Unlock expires the row rather than deleting it, so that the fence
		// keeps counting up across holders.
		unlock: `UPDATE ` + leases + ` SET expires_at = '-infinity' WHERE key = $1 AND owner = $2`,
		extend: `UPDATE ` + leases + ` SET expires_at = clock_timestamp() + $3::interval
WHERE key = $1 AND owner = $2 AND expires_at > clock_timestamp() AND isfinite(expires_at)`,
		listen: `LISTEN ` + pgx.Identifier{table}.Sanitize(),
	}
}

// New returns a Store that keeps its rows in pool's database. The caller
// keeps ownership of pool: Close does not close it. Unless
// WithoutAutoMigrate is given, the tables are created on first use. A nil
// pool, or an option given a bad value, is an error naming what was wrong.
func New(pool *pgxpool.Pool, opts ...Option) (*Store, error) {
	if pool == nil {
		return nil, errors.New("pgstore: New: pool is nil")
	}
	c := config{table: DefaultTable}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if len(c.problems) > 0 {
		return nil, errors.Join(c.problems...)
	}
	stopCtx, stop := context.WithCancel(context.Background())
	return &Store{
		pool:       pool,
		table:      c.table,
		prefix:     c.prefix,
		auto:       !c.noMigr,
		notify:     c.notify,
		sql:        buildStatements(c.table),
		migrateSem: make(chan struct{}, 1),
		listenSem:  make(chan struct{}, 1),
		stopCtx:    stopCtx,
		stop:       stop,
		watchers:   make(map[string]map[*watcher]struct{}),
	}, nil
}

// Migrate creates the items and leases tables if they do not exist. It is
// idempotent and safe to run from many nodes at once (a transaction-scoped
// advisory lock serialises the CREATE statements, which PostgreSQL does not
// make race-free by itself).
func (s *Store) Migrate(ctx context.Context) error {
	// An *OpError like every other, its Key the table's name.
	if ctx == nil {
		return opErr("migrate", s.table, errors.New("nil context"))
	}
	if err := ctx.Err(); err != nil {
		return opErr("migrate", s.table, err)
	}
	if s.closed.Load() {
		return opErr("migrate", s.table, store.ErrClosed)
	}
	if err := s.migrate(ctx); err != nil {
		return opErr("migrate", s.table, err)
	}
	return nil
}

func (s *Store) migrate(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, "wechatconf/pgstore migrate "+s.table); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, s.sql.migrateItems); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, s.sql.migrateLeases)
		return err
	})
	if err != nil {
		return err
	}
	s.migrated.Store(true)
	return nil
}

// ensure migrates once, on first use, unless WithoutAutoMigrate was given.
// A failed migration is tried again by the next operation.
func (s *Store) ensure(ctx context.Context) error {
	if !s.auto || s.migrated.Load() {
		return nil
	}
	select {
	case s.migrateSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.migrateSem }()
	if s.migrated.Load() {
		return nil
	}
	return s.migrate(ctx)
}

// Close stops the LISTEN goroutine and its connection (if Watch started
// them: they are the Store's) and closes every Watch channel. It does not
// close a pool given to New, which stays the caller's; a Store from
// store.Open closes the pool it made. Later operations, on the Store
// and on its leases, fail with an error matching store.ErrClosed. Close is
// idempotent and returns nil.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.stop()
		// A Watch may be starting the listener right now: wait for it to
		// finish (stop has cancelled its connect) so that wg counts it.
		s.listenSem <- struct{}{}
		<-s.listenSem
		s.wg.Wait()
		s.wmu.Lock()
		for _, set := range s.watchers {
			for w := range set {
				w.stopAfter()
				w.done = true
				close(w.ch)
			}
		}
		s.watchers = make(map[string]map[*watcher]struct{})
		s.wmu.Unlock()
		if s.closePool != nil {
			s.closePool()
		}
	})
	return nil
}

func opErr(op, key string, err error) error {
	return &store.OpError{Backend: backend, Op: op, Key: key, Err: err}
}

// begin checks what every operation checks before it reaches the database.
func (s *Store) begin(ctx context.Context, op, key string) error {
	if ctx == nil {
		return opErr(op, key, errors.New("nil context"))
	}
	if err := ctx.Err(); err != nil {
		return opErr(op, key, err)
	}
	if s.closed.Load() {
		return opErr(op, key, store.ErrClosed)
	}
	if key == "" {
		return opErr(op, key, errors.New("key is empty"))
	}
	if op != "watch" && op != "unlock" && op != "extend" {
		if err := s.ensure(ctx); err != nil {
			return opErr(op, key, fmt.Errorf("auto-migrate table %s: %w", s.table, err))
		}
	}
	return nil
}

// fail wraps a database error. A missing table gets ErrNotMigrated, and an
// auto-migrating store will create it again on the next call.
func (s *Store) fail(op, key string, err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42P01" { // undefined_table
		s.migrated.Store(false)
		return opErr(op, key, fmt.Errorf("%w: %w", ErrNotMigrated, err))
	}
	return opErr(op, key, err)
}

// Get returns the item under key, or an error matching store.ErrNotFound
// when there is none or it has expired by the database clock, or one
// matching store.ErrMalformed when the row is no item: a NULL value, a NULL
// or non-finite ('infinity', '-infinity') expiry.
func (s *Store) Get(ctx context.Context, key string) (store.Item, error) {
	if err := s.begin(ctx, "get", key); err != nil {
		return store.Item{}, err
	}
	var (
		value pgtype.Text
		exp   pgtype.Timestamptz
	)
	err := s.pool.QueryRow(ctx, s.sql.get, s.prefix+key).Scan(&value, &exp)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Item{}, opErr("get", key, store.ErrNotFound)
	}
	if err != nil {
		return store.Item{}, s.fail("get", key, err)
	}
	switch {
	case !value.Valid:
		return store.Item{}, opErr("get", key, fmt.Errorf("%w: the value is NULL", store.ErrMalformed))
	case !exp.Valid:
		return store.Item{}, opErr("get", key, fmt.Errorf("%w: expires_at is NULL", store.ErrMalformed))
	case exp.InfinityModifier == pgtype.Infinity:
		return store.Item{}, opErr("get", key, fmt.Errorf("%w: expires_at is 'infinity'", store.ErrMalformed))
	case exp.InfinityModifier != pgtype.Finite:
		return store.Item{}, opErr("get", key, fmt.Errorf("%w: expires_at is '-infinity'", store.ErrMalformed))
	}
	return store.Item{Value: value.String, ExpiresAt: exp.Time}, nil
}

// Set stores item under key unless the stored item expires later, in one
// statement. A stored row that is no item (see Get) or that is not
// Plausible at this node's clock is overwritten whatever its expiry. With
// WithNotify the same statement sends a NOTIFY when the item was stored.
func (s *Store) Set(ctx context.Context, key string, item store.Item) error {
	if err := s.begin(ctx, "set", key); err != nil {
		return err
	}
	bound := time.Now().Add(store.MaxLifetime + store.ClockSlack)
	var err error
	if s.notify {
		_, err = s.pool.Exec(ctx, s.sql.setNotify, s.prefix+key, item.Value, item.ExpiresAt, bound, s.table)
	} else {
		_, err = s.pool.Exec(ctx, s.sql.set, s.prefix+key, item.Value, item.ExpiresAt, bound)
	}
	if err != nil {
		return s.fail("set", key, err)
	}
	return nil
}

// interval rounds ttl up to PostgreSQL's microsecond, so that a tiny
// positive ttl does not become zero.
func interval(ttl time.Duration) time.Duration {
	return (ttl + time.Microsecond - 1).Truncate(time.Microsecond)
}

// Lock takes the lease on key for ttl by inserting or taking over its row,
// or returns an error matching store.ErrLocked at once when the row holds a
// live lease. A row whose expiry is 'infinity' or NULL holds no lease (see
// the package doc) and is taken over.
func (s *Store) Lock(ctx context.Context, key string, ttl time.Duration) (store.Lease, error) {
	if err := s.begin(ctx, "lock", key); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		return nil, opErr("lock", key, fmt.Errorf("ttl %v is not positive", ttl))
	}
	l := &lease{s: s, key: key, owner: make([]byte, 16)}
	if _, err := rand.Read(l.owner); err != nil {
		return nil, opErr("lock", key, fmt.Errorf("random owner: %w", err))
	}
	err := s.pool.QueryRow(ctx, s.sql.lock, s.prefix+key, l.owner, interval(ttl)).Scan(&l.fence)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, opErr("lock", key, store.ErrLocked)
	}
	if err != nil {
		return nil, s.fail("lock", key, err)
	}
	return l, nil
}

// lease is a lease row taken by Store.Lock. It implements store.Lease and
// store.Extender.
type lease struct {
	s     *Store
	key   string
	owner []byte
	fence int64 // the row's fence when we took it (tests read it)
}

var (
	_ store.Lease    = (*lease)(nil)
	_ store.Extender = (*lease)(nil)
)

// Unlock ends the lease if the row still has our owner value; a lease that
// expired and was taken over is left to its new holder. Unlock is
// idempotent.
func (l *lease) Unlock(ctx context.Context) error {
	if err := l.s.begin(ctx, "unlock", l.key); err != nil {
		return err
	}
	if _, err := l.s.pool.Exec(ctx, l.s.sql.unlock, l.s.prefix+l.key, l.owner); err != nil {
		return l.s.fail("unlock", l.key, err)
	}
	return nil
}

// Extend gives the lease ttl more time from the database's now if it is
// still ours and live, or returns an error matching store.ErrLeaseLost.
func (l *lease) Extend(ctx context.Context, ttl time.Duration) error {
	if err := l.s.begin(ctx, "extend", l.key); err != nil {
		return err
	}
	if ttl <= 0 {
		return opErr("extend", l.key, fmt.Errorf("ttl %v is not positive", ttl))
	}
	tag, err := l.s.pool.Exec(ctx, l.s.sql.extend, l.s.prefix+l.key, l.owner, interval(ttl))
	if err != nil {
		return l.s.fail("extend", l.key, err)
	}
	if tag.RowsAffected() == 0 {
		return opErr("extend", l.key, store.ErrLeaseLost)
	}
	return nil
}

// String describes the lease without its owner value.
func (l *lease) String() string {
	return fmt.Sprintf("pgstore.lease{key:%q fence:%d}", l.key, l.fence)
}
