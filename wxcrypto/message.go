package wxcrypto

import (
	"bytes"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
)

// MaxBodySize bounds the request body OpenRequest reads. WeChat's messages
// are a few kilobytes; anything near this size is not from WeChat.
const MaxBodySize = 1 << 20

// Envelope is the outer XML of an encrypted message, in either direction:
// WeChat sends <xml><ToUserName/><Encrypt/></xml> (WeCom adds <AgentID/>;
// compatible mode adds the plaintext fields, which Envelope ignores), and a
// reply carries <Encrypt/>, <MsgSignature/>, <TimeStamp/> and <Nonce/>.
type Envelope struct {
	XMLName      xml.Name `xml:"xml"`
	ToUserName   string   `xml:"ToUserName"`
	AgentID      string   `xml:"AgentID"`
	Encrypt      string   `xml:"Encrypt"`
	MsgSignature string   `xml:"MsgSignature"`
	TimeStamp    string   `xml:"TimeStamp"`
	Nonce        string   `xml:"Nonce"`
}

// MaxXMLDepth bounds how deeply the elements of a body may nest. WeChat's
// messages nest three or four levels (<xml><ArticleItems><item>...); a
// deeper body is not from WeChat and is refused with ErrMalformedXML
// before it costs more than one pass over its bytes.
const MaxXMLDepth = 32

// ParseEnvelope reads the envelope fields of a message body. The root must
// be <xml>; other elements are ignored, but an envelope field given twice
// is refused (which copy counts would be a guess). Bodies over MaxBodySize
// are refused with ErrTooLarge; other errors wrap ErrMalformedXML.
func ParseEnvelope(body []byte) (Envelope, error) {
	env, err := parseEnvelope(body)
	if err != nil {
		return Envelope{}, fmt.Errorf("wxcrypto: parse envelope: %w", err)
	}
	return env, nil
}

// field returns where the text of the envelope element named local goes,
// and its bit in a set of seen fields; nil for other elements.
func (env *Envelope) field(local string) (*string, uint8) {
	switch local {
	case "ToUserName":
		return &env.ToUserName, 1 << 0
	case "AgentID":
		return &env.AgentID, 1 << 1
	case "Encrypt":
		return &env.Encrypt, 1 << 2
	case "MsgSignature":
		return &env.MsgSignature, 1 << 3
	case "TimeStamp":
		return &env.TimeStamp, 1 << 4
	case "Nonce":
		return &env.Nonce, 1 << 5
	}
	return nil, 0
}

// parseEnvelope walks the tokens of body once, counting the depth, and
// keeps the direct text (CDATA included) of the envelope fields that are
// children of the root, as xml.Unmarshal into Envelope would. Reading stops
// at the end of the root element.
func parseEnvelope(body []byte) (Envelope, error) {
	var env Envelope
	if len(body) > MaxBodySize {
		return env, fmt.Errorf("body %w (%d bytes, over %d)", ErrTooLarge, len(body), MaxBodySize)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return env, fmt.Errorf("%w: empty body", ErrMalformedXML)
	}
	d := xml.NewDecoder(bytes.NewReader(body))
	var (
		depth int
		field *string // the envelope field being read, at depth 2
		seen  uint8
	)
	for {
		tok, err := d.Token()
		if err != nil {
			if err == io.EOF {
				err = errors.New("no <xml> root element")
			}
			return Envelope{}, fmt.Errorf("%w: %v", ErrMalformedXML, err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			if depth > MaxXMLDepth {
				return Envelope{}, fmt.Errorf("%w: elements nested deeper than %d levels", ErrMalformedXML, MaxXMLDepth)
			}
			switch depth {
			case 1:
				if t.Name.Local != "xml" {
					return Envelope{}, fmt.Errorf("%w: root element is <%s>, want <xml>", ErrMalformedXML, clip([]byte(t.Name.Local)))
				}
				env.XMLName = t.Name
			case 2:
				var bit uint8
				field, bit = env.field(t.Name.Local)
				if seen&bit != 0 {
					return Envelope{}, fmt.Errorf("%w: <%s> given twice", ErrMalformedXML, t.Name.Local)
				}
				seen |= bit
			}
		case xml.EndElement:
			if depth == 2 {
				field = nil
			}
			depth--
			if depth == 0 {
				return env, nil
			}
		case xml.CharData:
			if depth == 2 && field != nil {
				*field += string(t)
			}
		}
	}
}

// Message is a request that Open accepted.
type Message struct {
	// Body is the message XML in plaintext, decrypted if it came
	// encrypted. In normal mode it is the request body itself.
	Body []byte
	// Encrypted tells whether the message arrived encrypted; Reply then
	// encrypts the answer, as WeChat expects.
	Encrypted bool
	// Previous tells whether the message came under the previous pair
	// (WithPrevious): the rotation in the console is not finished while
	// this happens. Reply answers with the same pair.
	Previous bool
	// ToUserName is the envelope's ToUserName (the account's original ID
	// for an Official Account, the CorpID for WeCom).
	ToUserName string
	// Timestamp and Nonce are the request's query parameters.
	Timestamp, Nonce string
}

// OpenRequest is Open for an *http.Request: it takes the query parameters
// from the URL and reads the body, up to MaxBodySize.
func (c *Crypto) OpenRequest(r *http.Request) (*Message, error) {
	if r == nil || r.URL == nil {
		return nil, fmt.Errorf("wxcrypto: open: %w: no request", ErrMalformedXML)
	}
	var body []byte
	if r.Body != nil {
		var err error
		body, err = io.ReadAll(io.LimitReader(r.Body, MaxBodySize+1))
		if err != nil {
			return nil, fmt.Errorf("wxcrypto: open: reading body: %w", err)
		}
		if len(body) > MaxBodySize {
			return nil, fmt.Errorf("wxcrypto: open: body %w (over %d bytes)", ErrTooLarge, MaxBodySize)
		}
	}
	return c.Open(r.URL.Query(), body)
}

// Open authenticates a message WeChat pushed, and decrypts it if it came
// encrypted. query holds the request's parameters (signature, timestamp,
// nonce, encrypt_type, msg_signature) and body its XML.
//
// Per mode: normal accepts plaintext checked by "signature"; compatible
// decrypts when the body has <Encrypt> (or the query says encrypt_type=aes)
// and otherwise takes the plaintext; safe requires encryption. Encrypted
// bodies are checked by "msg_signature" before they are decrypted.
//
// Every request is checked against the replay window (DefaultMaxSkew,
// see WithMaxSkew): a captured signature, timestamp and nonce go stale.
// With WithReplayCache, a request accepted before is refused with
// ErrReplay.
// A body over MaxBodySize is refused, whatever the entry point.
//
// Errors wrap ErrTooLarge, ErrMalformedXML, ErrModeMismatch, ErrSignature,
// ErrStaleTimestamp, ErrReplay, or a decryption error (ErrBase64, ErrBlockSize,
// ErrPadding, ErrLength, ErrReceiverID).
func (c *Crypto) Open(query url.Values, body []byte) (*Message, error) {
	const op = "open"
	env, err := parseEnvelope(body)
	if err != nil {
		return nil, fmt.Errorf("wxcrypto: %s: %w", op, err)
	}
	ts, nonce := query.Get("timestamp"), query.Get("nonce")
	m := &Message{ToUserName: env.ToUserName, Timestamp: ts, Nonce: nonce}
	encrypted := query.Get("encrypt_type") == "aes" || query.Get("msg_signature") != "" || env.Encrypt != ""
	switch {
	case encrypted && c.mode == Normal:
		return nil, fmt.Errorf("wxcrypto: %s: %w: message is encrypted but the mode is normal", op, ErrModeMismatch)
	case !encrypted && c.mode == Safe:
		return nil, fmt.Errorf("wxcrypto: %s: %w: message is plaintext but the mode is safe", op, ErrModeMismatch)
	case !encrypted:
		pairs, err := c.verify(op, query.Get("signature"), ts, nonce, "", false)
		if err != nil {
			return nil, err
		}
		if err := c.checkReplay(op, ts, nonce); err != nil {
			return nil, err
		}
		m.Body = body
		m.Previous = pairs[0] != c.cur
		return m, nil
	}
	if env.Encrypt == "" {
		return nil, fmt.Errorf("wxcrypto: %s: %w: encrypted message without an <Encrypt> element", op, ErrMalformedXML)
	}
	msg, prev, err := c.openEncrypted(op, query.Get("msg_signature"), ts, nonce, env.Encrypt)
	if err != nil {
		return nil, err
	}
	if err := c.checkReplay(op, ts, nonce); err != nil {
		return nil, err
	}
	m.Body, m.Encrypted, m.Previous = msg, true, prev
	return m, nil
}

// openEncrypted checks msg_signature, then decrypts with the key of the
// pair whose token matched. It reports whether that was the previous pair.
func (c *Crypto) openEncrypted(op, msgSignature, timestamp, nonce, encrypt string) ([]byte, bool, error) {
	pairs, err := c.verify(op, msgSignature, timestamp, nonce, encrypt, true)
	if err != nil {
		return nil, false, err
	}
	var first error
	for _, p := range pairs {
		msg, err := c.decrypt(encrypt, p, op)
		if err == nil {
			return msg, p != c.cur, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, false, first
}

// VerifyURL answers the check WeChat makes when a server URL is saved in
// the console: it returns the text to write back as the response body.
//
// An Official Account sends signature, timestamp, nonce and echostr; the
// answer is echostr once the signature matches. In compatible and safe mode
// a request with msg_signature (WeCom always sends one) carries an
// encrypted echostr instead, which is authenticated, decrypted and returned.
func (c *Crypto) VerifyURL(query url.Values) (string, error) {
	const op = "verify URL"
	ts, nonce, echo := query.Get("timestamp"), query.Get("nonce"), query.Get("echostr")
	if msgSig := query.Get("msg_signature"); msgSig != "" && c.mode != Normal {
		msg, _, err := c.openEncrypted(op, msgSig, ts, nonce, echo)
		if err != nil {
			return "", err
		}
		return string(msg), nil
	}
	if _, err := c.verify(op, query.Get("signature"), ts, nonce, "", false); err != nil {
		return "", err
	}
	return echo, nil
}

type cdata struct {
	Text string `xml:",cdata"`
}

// sealedReply is the reply envelope, with CDATA sections as WeChat's own
// samples write them.
type sealedReply struct {
	XMLName      xml.Name `xml:"xml"`
	Encrypt      cdata    `xml:"Encrypt"`
	MsgSignature cdata    `xml:"MsgSignature"`
	TimeStamp    int64    `xml:"TimeStamp"`
	Nonce        cdata    `xml:"Nonce"`
}

// sealedRequest is the envelope WeChat sends in safe mode.
type sealedRequest struct {
	XMLName    xml.Name `xml:"xml"`
	ToUserName cdata    `xml:"ToUserName"`
	Encrypt    cdata    `xml:"Encrypt"`
}

// Seal encrypts a reply with the current pair and wraps it in the envelope
// WeChat expects: Encrypt, MsgSignature, TimeStamp (from the clock) and a
// fresh random Nonce. Use Reply to follow the request's encryption.
func (c *Crypto) Seal(reply []byte) ([]byte, error) {
	return c.seal(c.cur, reply)
}

// Reply answers m: encrypted with the pair m came with (Seal) when m was
// encrypted, else reply unchanged. A nil m gets a plaintext reply.
func (c *Crypto) Reply(m *Message, reply []byte) ([]byte, error) {
	if m == nil || !m.Encrypted {
		return reply, nil
	}
	p := c.cur
	if m.Previous && c.prev != nil {
		p = c.prev
	}
	return c.seal(p, reply)
}

func (c *Crypto) seal(p *pair, reply []byte) ([]byte, error) {
	const op = "seal"
	enc, err := c.encryptString(reply, p, op)
	if err != nil {
		return nil, err
	}
	nonce, err := c.newNonce()
	if err != nil {
		return nil, fmt.Errorf("wxcrypto: %s: %w", op, err)
	}
	ts := c.now().Unix()
	out, err := xml.Marshal(sealedReply{
		Encrypt:      cdata{enc},
		MsgSignature: cdata{MsgSignature(p.token, strconv.FormatInt(ts, 10), nonce, enc)},
		TimeStamp:    ts,
		Nonce:        cdata{nonce},
	})
	if err != nil {
		return nil, fmt.Errorf("wxcrypto: %s: %w", op, err)
	}
	return out, nil
}

// OpenReply is the other side of Seal: it checks a reply envelope's
// MsgSignature (and TimeStamp, against the replay window) and returns the decrypted
// reply. It is what WeChat does with an answer; tests and fakes of WeChat
// use it.
func (c *Crypto) OpenReply(body []byte) ([]byte, error) {
	const op = "open reply"
	env, err := parseEnvelope(body)
	if err != nil {
		return nil, fmt.Errorf("wxcrypto: %s: %w", op, err)
	}
	if env.Encrypt == "" {
		return nil, fmt.Errorf("wxcrypto: %s: %w: no <Encrypt> element", op, ErrMalformedXML)
	}
	msg, _, err := c.openEncrypted(op, env.MsgSignature, env.TimeStamp, env.Nonce, env.Encrypt)
	return msg, err
}

// SealRequest builds a request as WeChat would push msg to this
// application: the query parameters and the body. In normal mode the body
// is msg itself; otherwise it is the safe-mode envelope addressed to
// toUserName, with encrypt_type=aes and msg_signature. Fakes of WeChat and
// tests use it to drive a server.
func (c *Crypto) SealRequest(toUserName string, msg []byte) (url.Values, []byte, error) {
	const op = "seal request"
	nonce, err := c.newNonce()
	if err != nil {
		return nil, nil, fmt.Errorf("wxcrypto: %s: %w", op, err)
	}
	ts := strconv.FormatInt(c.now().Unix(), 10)
	q := url.Values{
		"signature": {Signature(c.cur.token, ts, nonce)},
		"timestamp": {ts},
		"nonce":     {nonce},
	}
	if c.mode == Normal {
		return q, msg, nil
	}
	enc, err := c.encryptString(msg, c.cur, op)
	if err != nil {
		return nil, nil, err
	}
	body, err := xml.Marshal(sealedRequest{ToUserName: cdata{toUserName}, Encrypt: cdata{enc}})
	if err != nil {
		return nil, nil, fmt.Errorf("wxcrypto: %s: %w", op, err)
	}
	q.Set("encrypt_type", "aes")
	q.Set("msg_signature", MsgSignature(c.cur.token, ts, nonce, enc))
	return q, body, nil
}

// newNonce returns a random decimal nonce, the shape WeChat uses.
func (c *Crypto) newNonce() (string, error) {
	var b [4]byte
	if err := c.readRand(b[:]); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	return strconv.FormatUint(uint64(binary.BigEndian.Uint32(b[:])), 10), nil
}
