package rebalancer

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
)

// Handler serves the rebalancer's API:
//
//	POST   /api/v1/drain?scraper=ID   mark a scraper for draining
//	DELETE /api/v1/drain?scraper=ID   end draining
//	GET    /api/v1/cluster            Status as JSON
//	GET    /cluster                   the same as an HTML page
//
// Drain requests work on any replica: the mark is stored in etcd.
func (r *Rebalancer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/drain", func(w http.ResponseWriter, req *http.Request) {
		r.serveDrain(w, req, true)
	})
	mux.HandleFunc("DELETE /api/v1/drain", func(w http.ResponseWriter, req *http.Request) {
		r.serveDrain(w, req, false)
	})
	mux.HandleFunc("GET /api/v1/cluster", func(w http.ResponseWriter, req *http.Request) {
		writeJSON(w, http.StatusOK, r.Status())
	})
	mux.HandleFunc("GET /cluster", r.serveClusterPage)
	return mux
}

type drainResponse struct {
	Scraper  string `json:"scraper"`
	Draining bool   `json:"draining"`
}

type errorResponse struct {
	Error string `json:"error"`
}

func (r *Rebalancer) serveDrain(w http.ResponseWriter, req *http.Request, drain bool) {
	id := req.URL.Query().Get("scraper")
	if id == "" {
		writeJSON(w, http.StatusBadRequest, errorResponse{"missing query parameter: scraper"})
		return
	}
	var err error
	if drain {
		err = r.Drain(req.Context(), id)
	} else {
		err = r.Undrain(req.Context(), id)
	}
	switch {
	case errors.Is(err, ErrInvalidScraper):
		writeJSON(w, http.StatusBadRequest, errorResponse{err.Error()})
	case errors.Is(err, ErrUnknownScraper):
		writeJSON(w, http.StatusNotFound, errorResponse{err.Error()})
	case err != nil:
		writeJSON(w, http.StatusInternalServerError, errorResponse{err.Error()})
	default:
		writeJSON(w, http.StatusOK, drainResponse{Scraper: id, Draining: drain})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing to do
}

// fmtFloat prints a float with at most two decimals and no trailing zeros.
func fmtFloat(v float64) string {
	return strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64)
}
