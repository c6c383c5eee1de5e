package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/pgstore"
)

// Every node of a deployment builds the store over the pool it already has.
// The node that wins the lease grants the token and stores it; the others
// wait for the NOTIFY and read it.
//
// (Not run by go test: it needs a PostgreSQL server in DATABASE_URL.)
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	s, err := pgstore.New(pool, pgstore.WithPrefix("prod:"), pgstore.WithNotify())
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	const key = "{wx123}:access_token"
	lease, err := s.Lock(ctx, key, 30*time.Second)
	switch {
	case err == nil:
		fmt.Println("granting")
		err = s.Set(ctx, key, store.Item{Value: "ACCESS_TOKEN", ExpiresAt: time.Now().Add(2 * time.Hour)})
		if err != nil {
			log.Fatal(err)
		}
		if err := lease.Unlock(ctx); err != nil {
			log.Fatal(err)
		}
	case errors.Is(err, store.ErrLocked):
		// Someone else is granting: wait for their Set.
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		ch, err := s.Watch(wctx, key)
		if err != nil {
			log.Fatal(err)
		}
		<-ch
	default:
		log.Fatal(err) // an outage: do not treat it as a miss
	}
	item, err := s.Get(ctx, key)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(item)
}

// Deployments whose application role may not run DDL migrate once, with a
// privileged role, and turn auto-migration off.
func ExampleStore_Migrate() {
	ctx := context.Background()
	admin, err := pgxpool.New(ctx, os.Getenv("ADMIN_DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer admin.Close()
	m, err := pgstore.New(admin, pgstore.WithTable("wechat_credentials"))
	if err != nil {
		log.Fatal(err)
	}
	if err := m.Migrate(ctx); err != nil {
		log.Fatal(err)
	}

	app, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer app.Close()
	s, err := pgstore.New(app, pgstore.WithTable("wechat_credentials"), pgstore.WithoutAutoMigrate())
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	_ = s // hand s to conf
}
