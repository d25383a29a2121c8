from gradexp.startup import gradexp

gradexp()
