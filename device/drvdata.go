package device

// DriverDataOf returns the bound driver's private data of d as a T, and
// whether there was data of that type: the typed form of DriverData, so a
// callback need not assert. It returns T's zero value and false when no
// driver is bound (the core clears the data after Remove) or the data is
// of another type.
func DriverDataOf[T any](d *Device) (T, bool) {
	v, ok := d.DriverData().(T)
	return v, ok
}
