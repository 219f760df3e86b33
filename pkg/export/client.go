package export

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/config"
)

// ClientConfig is how an exporter reaches its backend: headers,
// authentication (a bearer token or basic auth) and TLS, including client
// certificates (mTLS).
type ClientConfig struct {
	// Headers are added to every request (HTTP headers, gRPC metadata).
	Headers map[string]string `yaml:"headers,omitempty"`
	// BearerToken or BearerTokenFile (read at every request, so a rotated
	// token is picked up) is sent as "Authorization: Bearer <token>".
	BearerToken     config.Secret `yaml:"bearer_token,omitempty"`
	BearerTokenFile string        `yaml:"bearer_token_file,omitempty"`
	BasicAuth       *BasicAuth    `yaml:"basic_auth,omitempty"`
	// TLS configures server verification and the client certificate.
	TLS config.TLSConfig `yaml:"tls_config,omitempty"`
	// Timeout bounds one request (default 10s).
	Timeout time.Duration `yaml:"timeout,omitempty"`
}

// BasicAuth is HTTP basic authentication.
type BasicAuth struct {
	Username     string        `yaml:"username"`
	Password     config.Secret `yaml:"password,omitempty"`
	PasswordFile string        `yaml:"password_file,omitempty"`
}

func (c *ClientConfig) validate() error {
	if c.BearerToken != "" && c.BearerTokenFile != "" {
		return errors.New("bearer_token and bearer_token_file are mutually exclusive")
	}
	if c.BasicAuth != nil {
		if c.BearerToken != "" || c.BearerTokenFile != "" {
			return errors.New("basic_auth and bearer_token(_file) are mutually exclusive")
		}
		if c.BasicAuth.Username == "" {
			return errors.New("basic_auth needs a username")
		}
		if c.BasicAuth.Password != "" && c.BasicAuth.PasswordFile != "" {
			return errors.New("basic_auth: password and password_file are mutually exclusive")
		}
	}
	if c.hasAuth() {
		for k := range c.Headers {
			if strings.EqualFold(k, "Authorization") {
				return errors.New("an Authorization header and bearer_token/basic_auth are mutually exclusive")
			}
		}
	}
	for k := range c.Headers {
		if k == "" || strings.ContainsAny(k, " :\r\n") {
			return fmt.Errorf("invalid header name %q", k)
		}
	}
	if c.Timeout < 0 {
		return errors.New("timeout must not be negative")
	}
	if err := c.TLS.Validate(); err != nil {
		return fmt.Errorf("tls_config: %w", err)
	}
	return nil
}

func (c *ClientConfig) hasAuth() bool {
	return c.BearerToken != "" || c.BearerTokenFile != "" || c.BasicAuth != nil
}

func (c *ClientConfig) hasTLS() bool {
	return c.TLS != (config.TLSConfig{})
}

// tlsConfig returns the TLS configuration; nil means the defaults.
func (c *ClientConfig) tlsConfig() (*tls.Config, error) {
	if !c.hasTLS() {
		return nil, nil
	}
	tc, err := config.NewTLSConfig(&c.TLS)
	if err != nil {
		return nil, fmt.Errorf("tls_config: %w", err)
	}
	return tc, nil
}

// authorization returns the value of the Authorization header, if any.
func (c *ClientConfig) authorization() (string, error) {
	switch {
	case c.BearerToken != "":
		return "Bearer " + string(c.BearerToken), nil
	case c.BearerTokenFile != "":
		b, err := os.ReadFile(c.BearerTokenFile)
		if err != nil {
			return "", fmt.Errorf("read bearer token: %w", err)
		}
		return "Bearer " + strings.TrimSpace(string(b)), nil
	case c.BasicAuth != nil:
		pw := string(c.BasicAuth.Password)
		if c.BasicAuth.PasswordFile != "" {
			b, err := os.ReadFile(c.BasicAuth.PasswordFile)
			if err != nil {
				return "", fmt.Errorf("read basic auth password: %w", err)
			}
			pw = strings.TrimSpace(string(b))
		}
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(c.BasicAuth.Username+":"+pw)), nil
	}
	return "", nil
}

// httpClient builds the HTTP client of an exporter.
func (c *ClientConfig) httpClient() (*http.Client, error) {
	tc, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if tc != nil {
		tr.TLSClientConfig = tc
	}
	return &http.Client{Transport: tr}, nil
}

// setHeaders sets the configured headers and authorization on req.
func (c *ClientConfig) setHeaders(req *http.Request) error {
	for k, v := range c.Headers {
		req.Header.Set(k, v)
	}
	auth, err := c.authorization()
	if err != nil {
		return err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	return nil
}

// post sends body to url with the configured headers and authorization,
// then the headers that header sets. It returns the response, whose body
// it has closed, and up to 64 KiB of that body. body is read only until
// post returns (reusedBody), so the caller may reuse its memory then.
func (c *ClientConfig) post(ctx context.Context, hc *http.Client, url string, body [][]byte, header func(http.Header)) (*http.Response, []byte, error) {
	rb := newReusedBody(body)
	defer rb.close()
	req, err := rb.request(ctx, url)
	if err != nil {
		return nil, nil, permanent(err, "request")
	}
	if err := c.setHeaders(req); err != nil {
		return nil, nil, err
	}
	header(req.Header)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("post %s: %w", url, err)
	}
	defer resp.Body.Close()
	respBody, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp, respBody, nil
}

// perRPC adds headers and authorization to gRPC calls
// (credentials.PerRPCCredentials).
type perRPC struct{ c *ClientConfig }

func (p perRPC) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	md := make(map[string]string, len(p.c.Headers)+1)
	for k, v := range p.c.Headers {
		md[strings.ToLower(k)] = v
	}
	auth, err := p.c.authorization()
	if err != nil {
		return nil, err
	}
	if auth != "" {
		md["authorization"] = auth
	}
	return md, nil
}

// RequireTransportSecurity is false: sending credentials over plain text is
// the operator's choice (an http:// endpoint), as with OTLP/HTTP.
func (perRPC) RequireTransportSecurity() bool { return false }

// errBodyReused is what a request body reads once its sender returned.
var errBodyReused = errors.New("export: request body read after the request ended")

// reusedBody is a request body over memory that is reused once the request
// ends: close, at the end of the request, makes every later read fail
// instead of reading what the memory holds by then.
type reusedBody struct {
	mu     sync.Mutex
	parts  [][]byte
	size   int64
	closed bool
}

func newReusedBody(parts [][]byte) *reusedBody {
	rb := &reusedBody{parts: parts}
	for _, p := range parts {
		rb.size += int64(len(p))
	}
	return rb
}

// request is a POST of the body to url. net/http may read a request body
// after Do returned (a response that came before the body was written: an
// early 4xx/5xx), so the sender closes rb once Do returned, before it
// reuses the memory.
func (rb *reusedBody) request(ctx context.Context, url string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, rb.reader())
	if err != nil {
		return nil, err
	}
	req.ContentLength = rb.size
	req.GetBody = func() (io.ReadCloser, error) { return rb.reader(), nil }
	return req, nil
}

// reader returns a reader of the whole body (a retry by the transport
// calls GetBody for a new one).
func (rb *reusedBody) reader() io.ReadCloser { return &reusedBodyReader{rb: rb} }

func (rb *reusedBody) close() {
	rb.mu.Lock()
	rb.closed = true
	rb.parts = nil
	rb.mu.Unlock()
}

type reusedBodyReader struct {
	rb        *reusedBody
	part, off int
}

func (r *reusedBodyReader) Read(p []byte) (int, error) {
	r.rb.mu.Lock()
	defer r.rb.mu.Unlock()
	if r.rb.closed {
		return 0, errBodyReused
	}
	n := 0
	for n < len(p) && r.part < len(r.rb.parts) {
		c := copy(p[n:], r.rb.parts[r.part][r.off:])
		n += c
		r.off += c
		if r.off == len(r.rb.parts[r.part]) {
			r.part, r.off = r.part+1, 0
		}
	}
	if n == 0 && r.part == len(r.rb.parts) {
		return 0, io.EOF
	}
	return n, nil
}

func (r *reusedBodyReader) Close() error { return nil }
