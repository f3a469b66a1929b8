// A design for the corpus's synthesis and place-and-route programs: N
// multiply-accumulate units fed by an LFSR, their sums folded into one output.
module top #(parameter N = 2) (
  input clk, input rst, input [7:0] a, input [7:0] b,
  output [15:0] sum, output [7:0] lfsr_out
);
  reg [7:0] lfsr;
  always @(posedge clk)
    if (rst) lfsr <= 8'h1;
    else lfsr <= {lfsr[6:0], lfsr[7] ^ lfsr[5] ^ lfsr[4] ^ lfsr[3]};
  wire [15:0] fold [0:N];
  assign fold[0] = 16'h0;
  genvar k;
  generate
    for (k = 0; k < N; k = k + 1) begin : mac
      reg [15:0] acc;
      always @(posedge clk)
        if (rst) acc <= 0;
        else acc <= acc + (a ^ k[7:0]) * (b + lfsr);
      assign fold[k + 1] = fold[k] ^ acc;
    end
  endgenerate
  assign sum = fold[N];
  assign lfsr_out = lfsr;
endmodule
