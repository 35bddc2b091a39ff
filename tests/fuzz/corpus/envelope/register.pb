mseedš9
7
engine:0tcp://10.0.0.2:5700node1"cuda:0(€0€€@8