nseed¢—note: draining soon"y-
model.embed_tokens.weight(@0ˆï™«ÅèŒ‘'
model.norm.weight @( 0‘ÄÌ¡ÔÊÙ»ˆ` 0(2tcp://10.0.0.1:56018€€@(è