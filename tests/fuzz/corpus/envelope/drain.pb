pseed²

engine:0