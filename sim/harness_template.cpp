// The transaction harness of one component (bitmod.sim.harness fills in the @...@ fields):
// reads a script, drives it cycle by cycle under Verilator, writes every output transaction
// with its cycle stamp. The rules are those of sim/harness.py's module docstring.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <deque>
#include <functional>
#include <string>
#include <vector>
#include "Vtop.h"
#include "verilated.h"
#if VM_TRACE
#include "verilated_vcd_c.h"
#endif
// Payloads are little-endian 32-bit words. The script's payloads live in one pool (a script
// item and an input queue entry hold an offset into it), so nothing is allocated per
// transaction.
typedef std::vector<uint32_t> Pool;
#define UART_DIVISOR @UART_DIVISOR@  // 0: the component has no UART pins

struct InStream {
  const char* name; int width;
  std::function<void(Vtop*, bool)> set_valid;
  std::function<bool(Vtop*)> ready;
  std::function<void(Vtop*, const uint32_t*)> set_payload;
  std::deque<size_t> queue; bool offering = false; long taken = 0; long first = -1;
};
struct OutStream {
  const char* name; int width;
  std::function<bool(Vtop*)> valid;
  std::function<void(Vtop*, bool)> set_ready;
  std::function<void(Vtop*, uint32_t*)> payload;
  long count = 0; bool ready = false;
};
struct Static { const char* name; int width; std::function<void(Vtop*, const uint32_t*)> set; };
static int words_of(int width) { return width > 32 ? (width + 31) / 32 : 1; }

static uint64_t rng_state;
static uint64_t splitmix() {
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
static bool draw(uint64_t threshold) { return (splitmix() >> 11) < threshold; }

// Appends the hex number [text, text + n) to the pool as words_of(width) words.
static void parse_hex(const char* text, size_t n, int width, Pool& pool) {
  size_t base = pool.size();
  pool.resize(base + words_of(width), 0);
  int bit = 0;
  for (size_t i = n; i-- > 0; bit += 4) {
    char c = text[i];
    uint32_t v = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10
               : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : 99;
    if (v == 99) { fprintf(stderr, "bad hex digit in %.*s\n", (int)n, text); exit(2); }
    if (v && bit >= width) { fprintf(stderr, "payload %.*s wider than %d bits\n", (int)n, text, width); exit(2); }
    if (v) pool[base + bit / 32] |= v << (bit % 32);
  }
}
// The script's whitespace-separated tokens, read from one buffer.
struct Tokens {
  std::string text; size_t pos = 0; const char* start = nullptr; size_t len = 0;
  bool next() {
    while (pos < text.size() && (unsigned char)text[pos] <= ' ') ++pos;
    if (pos >= text.size()) return false;
    size_t begin = pos;
    while (pos < text.size() && (unsigned char)text[pos] > ' ') ++pos;
    start = text.data() + begin; len = pos - begin;
    return true;
  }
  bool is(const char* word) const { return len == strlen(word) && !memcmp(start, word, len); }
  std::string str() const { return std::string(start, len); }
  long number(const char* what) {  // the next token, a decimal integer
    if (!next()) { fprintf(stderr, "%s: missing number\n", what); exit(2); }
    char* end; long v = strtol(start, &end, 10);
    if (end != start + len) { fprintf(stderr, "%s: bad number %s\n", what, str().c_str()); exit(2); }
    return v;
  }
};
// The output file is written through one large buffer by hand: a job writes a line per
// response (160k for the default core job), and fprintf's locking and parsing cost more than
// formatting the digits.
struct Writer {
  FILE* f; std::string buf;
  explicit Writer(FILE* file) : f(file) { buf.reserve(1 << 20); }
  void flush() { fwrite(buf.data(), 1, buf.size(), f); buf.clear(); }
  void text(const char* s) { buf += s; }
  void put(char c) { buf.push_back(c); }
  void dec(long v) {
    if (v < 0) { buf.push_back('-'); v = -v; }
    char digits[24]; int n = 0;
    do { digits[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) buf.push_back(digits[--n]);
  }
  void hex32(uint32_t v, int width) {  // width 0: no leading zeros
    static const char* xd = "0123456789abcdef";
    int n = 8;
    if (!width) { n = 1; while (n < 8 && (v >> (4 * n))) ++n; }
    for (int i = n - 1; i >= 0; --i) buf.push_back(xd[(v >> (4 * i)) & 15]);
  }
  void hex(const uint32_t* w, int words) {
    int i = words - 1;
    while (i > 0 && w[i] == 0) --i;
    hex32(w[i], 0);
    for (--i; i >= 0; --i) hex32(w[i], 8);
  }
  void line_end() { buf.push_back('\n'); if (buf.size() > (1u << 20) - 256) flush(); }
};

struct Item { char op; int index; long n; size_t value; };  // value: an offset into the pool

int main(int argc, char** argv) {
  if (argc < 7) {
    fprintf(stderr, "usage: %s SCRIPT OUT SEED IDLE BACKPRESSURE TIMEOUT_CYCLES [WAVES.vcd]\n", argv[0]);
    return 2;
  }
  const char* script_path = argv[1];
  FILE* out_file = fopen(argv[2], "w");
  if (!out_file) { fprintf(stderr, "cannot write %s\n", argv[2]); return 2; }
  Writer out(out_file);
  rng_state = strtoull(argv[3], nullptr, 10);
  const uint64_t idle_t = (uint64_t)llround(atof(argv[4]) * 9007199254740992.0);
  const uint64_t bp_t = (uint64_t)llround(atof(argv[5]) * 9007199254740992.0);
  const long timeout = atol(argv[6]);

  VerilatedContext* ctx = new VerilatedContext;
  Vtop* top = new Vtop{ctx};
#if VM_TRACE
  VerilatedVcdC* tfp = nullptr;
  if (argc > 7) { ctx->traceEverOn(true); tfp = new VerilatedVcdC; top->trace(tfp, 99); tfp->open(argv[7]); }
#endif
  std::vector<InStream> ins = {@INS@};
  std::vector<OutStream> outs = {@OUTS@};
  std::vector<Static> statics = {@STATICS@};
  const int uart_div = UART_DIVISOR;
  const int uart_out = (int)outs.size();  // the index of tx among the outputs

  std::vector<Item> items;
  Pool pool;
  {
    FILE* script = fopen(script_path, "rb");
    if (!script) { fprintf(stderr, "cannot read %s\n", script_path); return 2; }
    Tokens tok;
    char chunk[1 << 16]; size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, script)) > 0) tok.text.append(chunk, got);
    fclose(script);
    while (tok.next()) {
      Item it{0, 0, 0, 0};
      if (tok.is("put")) {
        it.op = 'p'; it.index = (int)tok.number("put");
        if (it.index < 0 || it.index >= (int)ins.size()) { fprintf(stderr, "no input stream %d\n", it.index); return 2; }
        if (!tok.next()) { fprintf(stderr, "put: missing payload\n"); return 2; }
        it.value = pool.size(); parse_hex(tok.start, tok.len, ins[it.index].width, pool);
      } else if (tok.is("set")) {
        it.op = 's'; it.index = -1;
        if (!tok.next()) { fprintf(stderr, "set: missing port\n"); return 2; }
        for (size_t i = 0; i < statics.size(); ++i) if (tok.is(statics[i].name)) it.index = (int)i;
        if (it.index < 0) { fprintf(stderr, "no static port %s\n", tok.str().c_str()); return 2; }
        if (!tok.next()) { fprintf(stderr, "set: missing value\n"); return 2; }
        it.value = pool.size(); parse_hex(tok.start, tok.len, statics[it.index].width, pool);
      } else if (tok.is("wait")) {
        it.op = 'w'; it.index = (int)tok.number("wait"); it.n = tok.number("wait");
        if (it.index < 0 || it.index > uart_out - (uart_div ? 0 : 1)) { fprintf(stderr, "no output %d\n", it.index); return 2; }
      } else if (tok.is("reset")) {
        it.op = 'r'; it.n = tok.number("reset");
      } else if (tok.is("uart")) {
        if (!tok.next()) { fprintf(stderr, "uart: missing byte\n"); return 2; }
        it.op = 'u'; it.value = pool.size(); parse_hex(tok.start, tok.len, 8, pool);
        if (!uart_div) { fprintf(stderr, "uart directive without UART pins\n"); return 2; }
      } else { fprintf(stderr, "unknown directive %s\n", tok.str().c_str()); return 2; }
      items.push_back(it);
    }
  }
  int max_words = 1;
  for (auto& s : outs) max_words = std::max(max_words, words_of(s.width));
  std::vector<uint32_t> payload(max_words);  // an output transaction's payload

  // UART state: bytes to send on rx, the bit being sent; decoder of tx.
  std::deque<uint32_t> rx_queue; long rx_phase = -1; uint32_t rx_byte = 0;
  long tx_count = 0, tx_phase = -1; uint32_t tx_byte = 0; bool tx_prev = true;

  std::vector<char> took(ins.size(), 0);  // per input: a transfer at this cycle's edge
  size_t pc = 0; long reset_left = 0, cycle = 0;
  top->clk = 1; top->rst = 0;
  top->eval();
  int status = 0;
  for (;;) {
    // The script, up to the next unmet barrier.
    while (pc < items.size() && !reset_left) {
      Item& it = items[pc];
      if (it.op == 'p') { ins[it.index].queue.push_back(it.value); ++pc; }
      else if (it.op == 's') { statics[it.index].set(top, &pool[it.value]); ++pc; }
      else if (it.op == 'u') { rx_queue.push_back(pool[it.value]); ++pc; }
      else if (it.op == 'w') {
        long have = it.index == uart_out ? tx_count : outs[it.index].count;
        if (have >= it.n) ++pc; else break;
      } else {  // reset: every queued input taken first
        bool busy = !rx_queue.empty() || rx_phase >= 0;
        for (auto& s : ins) busy = busy || s.offering || !s.queue.empty();
        if (busy) break;
        reset_left = it.n + 1; ++pc; break;  // + 1: the wrapper's register
      }
    }
    bool pending = !rx_queue.empty() || rx_phase >= 0 || reset_left > 0;
    for (auto& s : ins) pending = pending || s.offering || !s.queue.empty();
    if (pc == items.size() && !pending) break;
    if (cycle >= timeout) {
      fprintf(stderr, "timeout: no progress after %ld cycles (script item %zu of %zu)\n", cycle, pc, items.size());
      status = 3; break;
    }
    // Drive this cycle's inputs.
    top->rst = reset_left > 1;
    for (auto& o : outs) { o.ready = bp_t ? !draw(bp_t) : true; o.set_ready(top, o.ready); }
    for (auto& s : ins) {
      if (!s.offering && !s.queue.empty() && !(idle_t && draw(idle_t))) {
        s.offering = true; s.set_payload(top, &pool[s.queue.front()]);
      }
      s.set_valid(top, s.offering);
    }
#if UART_DIVISOR
    if (uart_div) {
      if (rx_phase < 0 && !rx_queue.empty()) { rx_byte = rx_queue.front(); rx_queue.pop_front(); rx_phase = 0; }
      int bit = 1;
      if (rx_phase >= 0) {
        long b = rx_phase / uart_div;
        bit = b == 0 ? 0 : b <= 8 ? (rx_byte >> (b - 1)) & 1 : 1;
        if (++rx_phase == 10L * uart_div) rx_phase = -1;
      }
      top->rx = bit;
    }
#endif
    top->clk = 0;
    top->eval();
#if VM_TRACE
    if (tfp) tfp->dump((uint64_t)(2 * cycle + 1));
#endif
    // Transfers at this edge.
    for (size_t i = 0; i < ins.size(); ++i) took[i] = ins[i].offering && ins[i].ready(top);
    for (size_t i = 0; i < outs.size(); ++i) {
      if (outs[i].ready && outs[i].valid(top)) {
        out.dec((long)i); out.put(' '); out.dec(cycle); out.put(' ');
        outs[i].payload(top, payload.data());
        out.hex(payload.data(), words_of(outs[i].width)); out.line_end();
        ++outs[i].count;
      }
    }
#if UART_DIVISOR
    if (uart_div) {  // tx decoder: start edge, then the middle of every bit
      bool tx = top->tx;
      if (tx_phase < 0) { if (tx_prev && !tx) tx_phase = 0; }
      else {
        ++tx_phase;
        long middle = uart_div / 2;
        if (tx_phase >= middle && (tx_phase - middle) % uart_div == 0) {
          long b = (tx_phase - middle) / uart_div;
          if (b == 0 && tx) tx_phase = -1;  // a glitch, not a start bit
          else if (b >= 1 && b <= 8) tx_byte = (tx_byte >> 1) | ((uint32_t)tx << 7);
          else if (b == 9) {
            out.dec(uart_out); out.put(' '); out.dec(cycle); out.put(' ');
            out.hex32(tx_byte, 0); if (!tx) out.text(" ferr"); out.line_end();
            ++tx_count; tx_phase = -1;
          }
        }
      }
      tx_prev = tx;
    }
#endif
    top->clk = 1;
    top->eval();
#if VM_TRACE
    if (tfp) tfp->dump((uint64_t)(2 * cycle + 2));
#endif
    for (size_t i = 0; i < ins.size(); ++i) {
      if (took[i]) {
        if (ins[i].first < 0) ins[i].first = cycle;
        ins[i].queue.pop_front(); ins[i].offering = false; ++ins[i].taken;
      }
    }
    if (reset_left > 0) --reset_left;
    ++cycle;
  }
  for (size_t i = 0; i < ins.size(); ++i) {
    out.text("in "); out.dec((long)i); out.put(' '); out.dec(ins[i].first); out.put(' ');
    out.dec(ins[i].taken); out.line_end();
  }
  out.text("cycles "); out.dec(cycle); out.line_end();
  out.flush();
  fclose(out_file);
#if VM_TRACE
  if (tfp) tfp->close();
#endif
  top->final();
  delete top;
  delete ctx;
  return status;
}
