print("refresh")
