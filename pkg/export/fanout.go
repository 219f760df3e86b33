package export

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"go.opentelemetry.io/collector/pdata/pmetric"
)

// Set is the exporters built from a Config, fanned out: every scrape goes
// to each of them.
type Set struct {
	exporters []Exporter
	readers   []Exporter // consumers that do not keep md
	owners    []Exporter // consumers that take md over
	prom      *Prometheus
}

var _ Exporter = (*Set)(nil)

// NewFanout returns a Set sending to every exporter.
func NewFanout(exporters ...Exporter) *Set {
	s := &Set{exporters: exporters}
	for _, e := range exporters {
		if _, ok := e.(interface{ readOnly() }); ok {
			s.readers = append(s.readers, e)
		} else {
			s.owners = append(s.owners, e)
		}
		if p, ok := e.(*Prometheus); ok && s.prom == nil {
			s.prom = p
		}
	}
	return s
}

// ConsumeMetrics hands md to every exporter: first to those that only read
// it, then to those that keep it, each but the last getting a copy. A
// failing exporter (a full queue) does not keep md from the others.
func (s *Set) ConsumeMetrics(ctx context.Context, md pmetric.Metrics) error {
	var errs []error
	for _, e := range s.readers {
		if err := e.ConsumeMetrics(ctx, md); err != nil {
			errs = append(errs, err)
		}
	}
	for i, e := range s.owners {
		m := md
		if i < len(s.owners)-1 {
			m = pmetric.NewMetrics()
			md.CopyTo(m)
		}
		if err := e.ConsumeMetrics(ctx, m); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// encodedExporter is an exporter that takes encoded scrapes (the pipeline
// exporters; the OTLP ones send them as they are). ConsumeEncoded does not
// retain req (otlp.EncodedConsumer).
type encodedExporter interface {
	AcceptsEncoded() bool
	ConsumeEncoded(ctx context.Context, req []byte, points int) error
}

// AcceptsEncoded reports whether every exporter sends encoded scrapes as
// they are (only OTLP exporters); otherwise the pdata form is cheaper for
// the appender to build. It implements otlp.EncodedConsumer.
func (s *Set) AcceptsEncoded() bool {
	for _, e := range s.exporters {
		if ee, ok := e.(encodedExporter); !ok || !ee.AcceptsEncoded() {
			return false
		}
	}
	return len(s.exporters) > 0
}

// ConsumeEncoded hands an encoded scrape to every exporter: the same bytes
// to those that take them, decoded pdata (once, copied as ConsumeMetrics
// does) to the others. req is only read before this returns: each exporter
// queues a copy of its own (in its own pooled buffer), so none can recycle
// memory another still sends, and the appender can reuse req.
func (s *Set) ConsumeEncoded(ctx context.Context, req []byte, points int) error {
	var errs []error
	var rest []Exporter
	for _, e := range s.exporters {
		if ee, ok := e.(encodedExporter); ok {
			if err := ee.ConsumeEncoded(ctx, req, points); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		rest = append(rest, e)
	}
	if len(rest) > 0 {
		md, err := (&pmetric.ProtoUnmarshaler{}).UnmarshalMetrics(req)
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("export: decode scrape: %w", err))...)
		}
		if err := NewFanout(rest...).ConsumeMetrics(ctx, md); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Shutdown stops every exporter at once and waits for all of them.
func (s *Set) Shutdown(ctx context.Context) error {
	errs := make([]error, len(s.exporters))
	var wg sync.WaitGroup
	for i, e := range s.exporters {
		wg.Go(func() { errs[i] = e.Shutdown(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// PrometheusHandler is the pull endpoint, nil unless configured.
func (s *Set) PrometheusHandler() http.Handler {
	if s.prom == nil {
		return nil
	}
	return s.prom
}

// Exporters are the exporters of the set.
func (s *Set) Exporters() []Exporter { return s.exporters }
