iseedz{
y-
model.embed_tokens.weight(@0๏ซล่‘'
model.norm.weight @( 0‘ฤฬกิสูป` 0(2tcp://10.0.0.1:56018€€@