// widget placeholder; replaced below
