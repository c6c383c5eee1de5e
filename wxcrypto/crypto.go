package wxcrypto

import (
	"crypto/aes"
	"crypto/cipher"
	cryptorand "crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

const (
	// encodedKeyLen is the length of an EncodingAESKey: 32 bytes in base64
	// without its trailing "=".
	encodedKeyLen = 43
	// padBlock is the block WeChat pads to (PKCS#7 over 32 bytes, although
	// AES itself works on 16).
	padBlock = 32
	// headerLen is the 16 random bytes plus the 4-byte length.
	headerLen = 20
)

// ValidateKey reports whether encodingAESKey is usable: 43 characters that
// are the base64 of 32 bytes once "=" is appended. The error wraps
// ErrKeyLength or ErrKeyEncoding and never contains the key.
func ValidateKey(encodingAESKey string) error {
	_, err := decodeKey(encodingAESKey)
	if err != nil {
		return fmt.Errorf("wxcrypto: validate key: %w", err)
	}
	return nil
}

// decodeKey returns the 32-byte AES key. WeChat's keys are drawn from
// [A-Za-z0-9] so the last character often carries nonzero trailing bits:
// the lenient (non-Strict) decoder is required to accept them.
func decodeKey(encodingAESKey string) ([]byte, error) {
	if len(encodingAESKey) != encodedKeyLen {
		return nil, fmt.Errorf("%w, got %d", ErrKeyLength, len(encodingAESKey))
	}
	var src [encodedKeyLen + 1]byte
	copy(src[:], encodingAESKey)
	src[encodedKeyLen] = '='
	key := make([]byte, 32)
	n, err := base64.StdEncoding.Decode(key, src[:])
	if err != nil {
		// The decoder's error names the offending offset, never the key.
		return nil, fmt.Errorf("%w (%v)", ErrKeyEncoding, err)
	}
	if n != 32 {
		return nil, fmt.Errorf("%w: decodes to %d bytes, want 32", ErrKeyEncoding, n)
	}
	return key, nil
}

// pair is one Token and EncodingAESKey, as configured together in the
// WeChat console.
type pair struct {
	token  string
	keyLen int          // length of the EncodingAESKey, for String only
	block  cipher.Block // nil without a key
	iv     [aes.BlockSize]byte

	// CBC modes are reused: making one copies the whole expanded key.
	encModes, decModes sync.Pool
}

// ivSetter is implemented by the standard library's CBC modes; a mode is
// reset to the fixed IV before reuse.
type ivSetter interface{ SetIV([]byte) }

// getCBC returns a CBC mode (encrypting or decrypting) set to the IV.
// Give it back with putCBC.
func (p *pair) getCBC(encrypt bool) cipher.BlockMode {
	pool := &p.decModes
	if encrypt {
		pool = &p.encModes
	}
	if m, ok := pool.Get().(cipher.BlockMode); ok {
		m.(ivSetter).SetIV(p.iv[:])
		return m
	}
	if encrypt {
		return cipher.NewCBCEncrypter(p.block, p.iv[:])
	}
	return cipher.NewCBCDecrypter(p.block, p.iv[:])
}

// putCBC keeps m for reuse, if it can be reset to the IV.
func (p *pair) putCBC(encrypt bool, m cipher.BlockMode) {
	if _, ok := m.(ivSetter); !ok {
		return
	}
	if encrypt {
		p.encModes.Put(m)
	} else {
		p.decModes.Put(m)
	}
}

func newPair(token, encodingAESKey string) (*pair, error) {
	p := &pair{token: token}
	if encodingAESKey == "" {
		return p, nil
	}
	key, err := decodeKey(encodingAESKey)
	if err != nil {
		return p, err
	}
	block, err := aes.NewCipher(key)
	if err != nil { // unreachable with a 32-byte key; kept so it can never panic
		return p, fmt.Errorf("%w (%v)", ErrKeyLength, err)
	}
	p.keyLen = len(encodingAESKey)
	p.block = block
	copy(p.iv[:], key[:aes.BlockSize])
	return p, nil
}

// Crypto holds one application's Token, EncodingAESKey and receiver ID, and
// signs, verifies, encrypts and decrypts its messages. Create it with New;
// it is immutable and safe for concurrent use.
type Crypto struct {
	mode       Mode
	receiverID string
	rid        []byte // receiverID, for writing into plaintexts
	cur        *pair
	prev       *pair   // nil unless WithPrevious
	all        []*pair // cur, then prev if set
	maxSkew    time.Duration
	now        func() time.Time
	replay     ReplayCache // nil: no exact-replay check

	randMu sync.Mutex
	rand   io.Reader // nil means crypto/rand
}

// Option adjusts a Crypto at New.
type Option func(*options)

type options struct {
	prevSet    bool
	prevToken  string
	prevKey    string
	maxSkewSet bool
	maxSkew    time.Duration
	now        func() time.Time
	rand       io.Reader
	replay     ReplayCache
}

// WithPrevious also accepts messages signed with token and encrypted with
// encodingAESKey: the pair in use before a change in the WeChat console, so
// that a rotation loses no message. An empty token or key means that part
// did not change. Replies to such messages use the same previous pair.
func WithPrevious(token, encodingAESKey string) Option {
	return func(o *options) {
		o.prevSet = true
		o.prevToken = token
		o.prevKey = encodingAESKey
	}
}

// DefaultMaxSkew is the replay window a Crypto applies unless WithMaxSkew
// says otherwise: a request stamped further than this from the clock is
// refused with ErrStaleTimestamp. WeChat stamps requests with its own clock
// and retries a push for about 15 seconds, so five minutes leaves room for
// clock drift while a captured request (signature, timestamp and nonce,
// which in plaintext mode do not cover the body) goes stale quickly.
const DefaultMaxSkew = 5 * time.Minute

// WithMaxSkew sets the replay window: requests whose timestamp is more than
// d away from the clock are refused with ErrStaleTimestamp. The default is
// DefaultMaxSkew. Zero or less disables the check, which lets anyone who
// once saw a request replay it for ever: do that only for tests against
// fixed vectors.
func WithMaxSkew(d time.Duration) Option {
	return func(o *options) { o.maxSkewSet, o.maxSkew = true, d }
}

// WithClock replaces time.Now, for the replay guard and for the timestamps
// of sealed replies. Tests use it to be deterministic.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// WithRand replaces crypto/rand as the source of the 16 random bytes in
// each ciphertext and of reply nonces. Use it only in tests: predictable
// randomness weakens the encryption. Reads are serialized, so r need not be
// safe for concurrent use.
func WithRand(r io.Reader) Option {
	return func(o *options) { o.rand = r }
}

// New returns a Crypto for one application. receiverID is the AppID of an
// Official Account, or the CorpID (or suite ID) for WeCom; it is written
// into every ciphertext and checked in every decrypted one. In normal mode
// encodingAESKey may be empty; compatible and safe modes need it.
//
// Errors wrap ErrUnknownMode, ErrNoToken, ErrNoKey, ErrKeyLength or
// ErrKeyEncoding, and say which key (current or previous) was wrong.
func New(mode Mode, token, encodingAESKey, receiverID string, opts ...Option) (*Crypto, error) {
	if !mode.valid() {
		return nil, fmt.Errorf("wxcrypto: new: %w %q (want normal, compatible or safe)", ErrUnknownMode, string(mode))
	}
	if token == "" {
		return nil, fmt.Errorf("wxcrypto: new: %w", ErrNoToken)
	}
	if encodingAESKey == "" && mode != Normal {
		return nil, fmt.Errorf("wxcrypto: new: %w (%s mode needs one)", ErrNoKey, mode)
	}
	o := options{maxSkew: DefaultMaxSkew}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.maxSkew < 0 {
		o.maxSkew = 0
	}
	cur, err := newPair(token, encodingAESKey)
	if err != nil {
		return nil, fmt.Errorf("wxcrypto: new: %w", err)
	}
	c := &Crypto{
		mode:       mode,
		receiverID: receiverID,
		rid:        []byte(receiverID),
		cur:        cur,
		maxSkew:    o.maxSkew,
		now:        o.now,
		rand:       o.rand,
		replay:     o.replay,
	}
	if c.now == nil {
		c.now = time.Now
	}
	if o.prevSet {
		prevToken, prevKey := o.prevToken, o.prevKey
		if prevToken == "" {
			prevToken = token
		}
		if prevKey == "" {
			prevKey = encodingAESKey
		}
		prev, err := newPair(prevToken, prevKey)
		if err != nil {
			return nil, fmt.Errorf("wxcrypto: new: previous key: %w", err)
		}
		if prevKey == encodingAESKey {
			prev.block = cur.block // same key: Decrypt need not try it twice
		}
		c.prev = prev
	}
	c.all = []*pair{c.cur}
	if c.prev != nil {
		c.all = append(c.all, c.prev)
	}
	return c, nil
}

// Mode returns the encrypt mode.
func (c *Crypto) Mode() Mode { return c.mode }

// ReceiverID returns the AppID or CorpID written into ciphertexts.
func (c *Crypto) ReceiverID() string { return c.receiverID }

// String describes the Crypto without revealing its token or key, so that
// it can be logged.
func (c *Crypto) String() string {
	prev := "none"
	if c.prev != nil {
		prev = fmt.Sprintf("{token:%s key:%s}", redact(c.prev.token), redactLen(c.prev.keyLen))
	}
	return fmt.Sprintf("wxcrypto.Crypto{mode:%s receiverID:%q token:%s key:%s previous:%s maxSkew:%s}",
		c.mode, c.receiverID, redact(c.cur.token), redactLen(c.cur.keyLen), prev, c.maxSkew)
}

// GoString is String, so that %#v does not reveal secrets either.
func (c *Crypto) GoString() string { return c.String() }

// LogValue implements slog.LogValuer without revealing secrets.
func (c *Crypto) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("mode", string(c.mode)),
		slog.String("receiver_id", c.receiverID),
		slog.String("token", redact(c.cur.token)),
		slog.String("key", redactLen(c.cur.keyLen)),
		slog.Bool("previous", c.prev != nil),
		slog.Duration("max_skew", c.maxSkew),
	)
}

// redact matches internal/secret.Redact's format; it is repeated here so that this
// package depends on the standard library alone.
func redact(s string) string { return redactLen(len(s)) }

func redactLen(n int) string {
	if n == 0 {
		return `""`
	}
	return fmt.Sprintf("<redacted %d bytes>", n)
}

// pairs returns the current pair and, when set, the previous one.
func (c *Crypto) pairs() []*pair { return c.all }

func (c *Crypto) readRand(b []byte) error {
	if c.rand == nil {
		_, err := cryptorand.Read(b) // never fails since Go 1.24
		return err
	}
	c.randMu.Lock()
	defer c.randMu.Unlock()
	_, err := io.ReadFull(c.rand, b)
	return err
}

// sealedLen is the padded plaintext (and so ciphertext) length.
func sealedLen(msgLen, idLen int) int {
	n := headerLen + msgLen + idLen
	return n + padBlock - n%padBlock
}

// Encrypt returns the base64 ciphertext of msg with the current key, as it
// goes into an <Encrypt> element. The length field counts bytes, so any
// UTF-8 text (Chinese included) round-trips. Use Seal to build a whole
// reply.
func (c *Crypto) Encrypt(msg []byte) (string, error) {
	return c.encryptString(msg, c.cur, "encrypt")
}

func (c *Crypto) encryptString(msg []byte, p *pair, op string) (string, error) {
	encLen, err := c.encryptedLen(msg, p, op)
	if err != nil {
		return "", err
	}
	sink := b64Sink{toString: true}
	sink.sb.Grow(encLen)
	if err := c.encrypt(msg, p, &sink); err != nil {
		return "", fmt.Errorf("wxcrypto: %s: %w", op, err)
	}
	return sink.sb.String(), nil
}

// AppendEncrypt appends the base64 ciphertext of msg to dst and returns the
// extended slice: Encrypt without allocating, when dst has room.
func (c *Crypto) AppendEncrypt(dst, msg []byte) ([]byte, error) {
	const op = "encrypt"
	encLen, err := c.encryptedLen(msg, c.cur, op)
	if err != nil {
		return dst, err
	}
	sink := b64Sink{dst: slices.Grow(dst, encLen)}
	if err := c.encrypt(msg, c.cur, &sink); err != nil {
		return dst, fmt.Errorf("wxcrypto: %s: %w", op, err)
	}
	return sink.dst, nil
}

// b64Sink receives the base64 text: a concrete type, so that the compiler
// sees it keeps nothing it is given.
type b64Sink struct {
	toString bool
	sb       strings.Builder // the text goes here if toString
	dst      []byte          // else it is appended here
}

func (s *b64Sink) write(b []byte) {
	if s.toString {
		s.sb.Write(b)
		return
	}
	s.dst = append(s.dst, b...)
}

// encryptedLen checks that msg can be encrypted with p and returns the
// length of its base64 ciphertext.
func (c *Crypto) encryptedLen(msg []byte, p *pair, op string) (int, error) {
	if p.block == nil {
		return 0, fmt.Errorf("wxcrypto: %s: %w", op, ErrNoKey)
	}
	if uint64(len(msg)) > math.MaxUint32-uint64(padBlock+headerLen+len(c.receiverID)) {
		return 0, fmt.Errorf("wxcrypto: %s: message of %d bytes is %w for the 4-byte length field", op, len(msg), ErrTooLarge)
	}
	return base64.StdEncoding.EncodedLen(sealedLen(len(msg), len(c.receiverID))), nil
}

// encChunk is how much plaintext is encrypted and encoded at a time: a
// whole number of AES blocks and of 3-byte base64 groups, so the chunks'
// base64 texts simply concatenate.
const encChunk = 48 * aes.BlockSize

// encScratch is the working memory of one encryption. It is pooled: the
// CBC mode is reached through an interface, so a buffer on the stack would
// escape to the heap at every call.
type encScratch struct {
	hdr   [headerLen]byte
	pad   [padBlock]byte
	chunk [encChunk]byte
	out   [encChunk / 3 * 4]byte
}

var scratchPool = sync.Pool{New: func() any { return new(encScratch) }}

// encrypt streams the base64 ciphertext of msg to sink chunk by chunk:
// random(16) + length(4) + msg + receiver ID + padding pass through one
// pooled buffer, are encrypted in place and encoded.
func (c *Crypto) encrypt(msg []byte, p *pair, sink *b64Sink) error {
	s := scratchPool.Get().(*encScratch)
	defer scratchPool.Put(s)
	if err := c.readRand(s.hdr[:16]); err != nil {
		return fmt.Errorf("reading random bytes: %w", err)
	}
	binary.BigEndian.PutUint32(s.hdr[16:], uint32(len(msg)))
	pad := sealedLen(len(msg), len(c.receiverID)) - (headerLen + len(msg) + len(c.receiverID))
	for i := range pad {
		s.pad[i] = byte(pad)
	}

	mode := p.getCBC(true)
	fill := 0
	for _, b := range [...][]byte{s.hdr[:], msg, c.rid, s.pad[:pad]} {
		for len(b) > 0 {
			k := copy(s.chunk[fill:], b)
			fill += k
			b = b[k:]
			if fill == encChunk {
				s.flush(mode, sink, s.chunk[:])
				fill = 0
			}
		}
	}
	if fill > 0 {
		s.flush(mode, sink, s.chunk[:fill])
	}
	p.putCBC(true, mode)
	// Everything left in chunk is ciphertext; the header is cleared too.
	clear(s.hdr[:])
	return nil
}

func (s *encScratch) flush(mode cipher.BlockMode, sink *b64Sink, pt []byte) {
	mode.CryptBlocks(pt, pt)
	n := base64.StdEncoding.EncodedLen(len(pt))
	base64.StdEncoding.Encode(s.out[:n], pt)
	sink.write(s.out[:n])
}

// Decrypt returns the message inside a base64 ciphertext, checking the
// padding, the length field and the receiver ID. It tries the previous key
// too when WithPrevious is set. The result is a fresh slice the caller
// owns.
//
// Decrypt does not authenticate: CBC without a MAC can be tampered with.
// Check the msg_signature first (VerifyMsgSignature), or use Open, which
// does both in the right order.
//
// A ciphertext longer than MaxBodySize is refused before anything is
// allocated. Errors never quote decrypted bytes: they could be message
// content that would end up in logs.
//
// Errors wrap ErrNoKey, ErrTooLarge, ErrBase64, ErrBlockSize, ErrPadding,
// ErrLength or ErrReceiverID; with two keys, the error is the current key's.
func (c *Crypto) Decrypt(ciphertext string) ([]byte, error) {
	msg, err := c.decrypt(ciphertext, c.cur, "decrypt")
	if err != nil && c.prev != nil && c.prev.block != nil && c.prev.block != c.cur.block {
		if m, perr := c.decrypt(ciphertext, c.prev, "decrypt"); perr == nil {
			return m, nil
		}
	}
	return msg, err
}

func (c *Crypto) decrypt(ciphertext string, p *pair, op string) ([]byte, error) {
	if p.block == nil {
		return nil, fmt.Errorf("wxcrypto: %s: %w", op, ErrNoKey)
	}
	if len(ciphertext) > MaxBodySize {
		return nil, fmt.Errorf("wxcrypto: %s: ciphertext %w (%d bytes, over %d)", op, ErrTooLarge, len(ciphertext), MaxBodySize)
	}
	buf := make([]byte, base64.StdEncoding.DecodedLen(len(ciphertext)))
	n, err := base64.StdEncoding.Decode(buf, []byte(ciphertext))
	if err != nil {
		return nil, fmt.Errorf("wxcrypto: %s: %w (%v)", op, ErrBase64, err)
	}
	msg, err := c.open(buf[:n], p)
	if err != nil {
		return nil, fmt.Errorf("wxcrypto: %s: %w", op, err)
	}
	return msg, nil
}

// open decrypts ct in place and returns the message inside it. Its errors
// quote no decrypted byte (no pad value, length field or receiver ID): with
// a wrong key those are noise, with the right one they may be message
// content, and either way they would land in logs.
func (c *Crypto) open(ct []byte, p *pair) ([]byte, error) {
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("%w: %d bytes", ErrBlockSize, len(ct))
	}
	mode := p.getCBC(false)
	mode.CryptBlocks(ct, ct)
	p.putCBC(false, mode)
	pad := int(ct[len(ct)-1])
	if pad < 1 || pad > padBlock || pad > len(ct) {
		return nil, fmt.Errorf("%w: pad length not in 1..%d", ErrPadding, padBlock)
	}
	var diff byte
	for _, b := range ct[len(ct)-pad:] {
		diff |= b ^ byte(pad)
	}
	if diff != 0 {
		return nil, fmt.Errorf("%w: pad bytes differ from the pad length", ErrPadding)
	}
	body := ct[:len(ct)-pad]
	if len(body) < headerLen {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrLength, len(body), headerLen)
	}
	size := binary.BigEndian.Uint32(body[16:headerLen])
	if uint64(size) > uint64(len(body)-headerLen) {
		return nil, fmt.Errorf("%w: it claims more than the %d bytes that follow", ErrLength, len(body)-headerLen)
	}
	end := headerLen + int(size)
	if id := body[end:]; string(id) != c.receiverID {
		return nil, fmt.Errorf("%w: the message is not for %q (its %d trailing bytes differ)", ErrReceiverID, c.receiverID, len(id))
	}
	return body[headerLen:end:end], nil
}

// clip shortens attacker-controlled text before it goes into an error.
func clip(b []byte) string {
	const max = 64
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}
