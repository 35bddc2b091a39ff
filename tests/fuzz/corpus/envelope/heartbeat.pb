oseedª
engine:0 (€ 0 8