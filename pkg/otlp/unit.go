package otlp

import "strings"

// unitToUCUM translates a Prometheus UNIT (full words, "_per_") into the
// UCUM abbreviations OpenTelemetry uses, as the specification asks:
// "milliseconds" → "ms", "ratio" → "1", "bytes_per_second" → "By/s". Words
// it does not know are kept as they are.
func unitToUCUM(unit string) string {
	if unit == "" {
		return ""
	}
	num, den, per := strings.Cut(unit, "_per_")
	out := unitWord(num)
	if per {
		if den == "" {
			return out
		}
		return out + "/" + perUnitWord(den)
	}
	return out
}

func unitWord(w string) string {
	if u, ok := unitWords[w]; ok {
		return u
	}
	return w
}

func perUnitWord(w string) string {
	if u, ok := perUnitWords[w]; ok {
		return u
	}
	return unitWord(w)
}

var unitWords = map[string]string{
	// Time
	"days":         "d",
	"hours":        "h",
	"minutes":      "min",
	"seconds":      "s",
	"milliseconds": "ms",
	"microseconds": "us",
	"nanoseconds":  "ns",
	// Bytes
	"bytes":     "By",
	"kibibytes": "KiBy",
	"mebibytes": "MiBy",
	"gibibytes": "GiBy",
	"tebibytes": "TiBy",
	"kilobytes": "KBy",
	"megabytes": "MBy",
	"gigabytes": "GBy",
	"terabytes": "TBy",
	// SI
	"meters":  "m",
	"volts":   "V",
	"amperes": "A",
	"joules":  "J",
	"watts":   "W",
	"grams":   "g",
	// Misc
	"celsius": "Cel",
	"hertz":   "Hz",
	"ratio":   "1",
	"percent": "%",
}

// perUnitWords are the singular forms that follow "_per_".
var perUnitWords = map[string]string{
	"second": "s",
	"minute": "m",
	"hour":   "h",
	"day":    "d",
	"week":   "w",
	"month":  "mo",
	"year":   "y",
}
