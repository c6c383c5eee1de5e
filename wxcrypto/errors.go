package wxcrypto

import "errors"

// Sentinel errors. Every error caused by bad input or configuration wraps
// exactly one of them (only I/O failures, reading a request body or a
// WithRand source, wrap the cause instead), so that a handler can tell a
// forged request (ErrSignature, ErrStaleTimestamp, ErrReplay: answer 403) from a
// misconfiguration (ErrKeyLength, ErrReceiverID, ErrModeMismatch: page
// someone) with errors.Is.
var (
	// ErrUnknownMode is returned by ParseMode and New for an encrypt mode
	// other than normal, compatible or safe.
	ErrUnknownMode = errors.New("unknown encrypt mode")

	// ErrNoToken is returned by New when the token is empty: every
	// signature needs it.
	ErrNoToken = errors.New("token is empty")

	// ErrNoKey is returned when an operation needs an EncodingAESKey and
	// none was configured (normal mode may run without one).
	ErrNoKey = errors.New("no EncodingAESKey configured")

	// ErrKeyLength is returned when an EncodingAESKey is not 43 characters
	// long (WeChat's keys always are: 32 bytes in base64 without the "=").
	ErrKeyLength = errors.New("EncodingAESKey must be 43 characters")

	// ErrKeyEncoding is returned when an EncodingAESKey of the right length
	// is not base64 of 32 bytes.
	ErrKeyEncoding = errors.New("EncodingAESKey is not valid base64")

	// ErrBase64 is returned when a ciphertext is not valid standard base64.
	ErrBase64 = errors.New("ciphertext is not valid base64")

	// ErrBlockSize is returned when a decoded ciphertext is empty or not a
	// whole number of AES blocks (16 bytes).
	ErrBlockSize = errors.New("ciphertext is not a whole number of AES blocks")

	// ErrPadding is returned when the decrypted data does not end with
	// valid PKCS#7 padding (1 to 32 bytes, each holding the pad length).
	// With a valid ciphertext this almost always means a wrong key.
	ErrPadding = errors.New("bad PKCS#7 padding")

	// ErrLength is returned when the decrypted data is shorter than its
	// 20-byte header, or its length field claims more bytes than follow.
	ErrLength = errors.New("message length field larger than the data")

	// ErrReceiverID is returned when a message decrypts but names another
	// receiver (AppID or CorpID) than this Crypto's.
	ErrReceiverID = errors.New("wrong receiver ID")

	// ErrSignature is returned when a signature or msg_signature is missing
	// or does not match: the request did not come from WeChat, or the
	// token is wrong.
	ErrSignature = errors.New("bad signature")

	// ErrStaleTimestamp is returned for a timestamp that is not a Unix
	// time or lies farther from the clock than the replay window
	// (DefaultMaxSkew unless WithMaxSkew changes it): a replay, or a badly
	// wrong clock.
	ErrStaleTimestamp = errors.New("stale timestamp")

	// ErrReplay is returned by Open, with WithReplayCache, for a request
	// whose timestamp and nonce were accepted before: a replay inside the
	// replay window.
	ErrReplay = errors.New("replayed request")

	// ErrMalformedXML is returned when a body is not a well-formed <xml>
	// document, nests elements deeper than MaxXMLDepth, repeats an
	// envelope field, or lacks the <Encrypt> element an encrypted message
	// needs.
	ErrMalformedXML = errors.New("malformed XML")

	// ErrModeMismatch is returned when a message is plaintext in safe mode,
	// or encrypted in normal mode: the WeChat console and this Crypto
	// disagree about the encrypt mode.
	ErrModeMismatch = errors.New("message does not match the encrypt mode")

	// ErrTooLarge is returned for a body or ciphertext over MaxBodySize
	// (whichever entry point it reaches), or a message too long for the
	// 4-byte length field.
	ErrTooLarge = errors.New("too large")
)
